"""INT8 and FP16: static QDQ through onnxruntime.quantization, the accuracy- and latency-aware INT8 search, the
latency probe, quantization-aware training and FP16 copies for GPU targets."""
