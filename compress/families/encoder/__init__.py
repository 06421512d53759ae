"""The BERT-style text encoder family and what it alone does: its training glue, layer/head/FFN/vocabulary
shrinking, Hugging Face folder adapters, its ONNX export and dynamic INT8, ONNX Runtime's transformer fusion."""
