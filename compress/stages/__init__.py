"""The pipeline's stages, one module each, in the order the driver runs them; `ship.finish` benches the candidates,
compiles the one the budget picks and writes the reports."""
from __future__ import annotations

from compress.stages import distill, export, label, prune, quantize, train, widths

PIPELINE = (label.STAGE, train.STAGE, widths.STAGE, prune.STAGE, distill.STAGE, export.STAGE, quantize.STAGE)
