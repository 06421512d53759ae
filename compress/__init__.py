"""Train-then-shrink pipeline: train, prune, distill, quantize, compile per target, benchmark."""

__version__ = "0.1.0"
