"""Train-then-shrink pipeline: train, prune, distill, quantize, compile per target, benchmark."""

from common.version import __version__  # noqa: F401 - compress.__version__
