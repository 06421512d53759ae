"""torch -> ONNX, each export checked against its torch model before it is called done."""
