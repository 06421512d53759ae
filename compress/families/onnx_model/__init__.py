"""An ONNX file taken as given: the post-training path."""
