"""The one post-training INT8 path for one-input ONNX graphs (an image model, an ONNX file as given): the searched
static QDQ that may ship (`tuned`), or ONNX Runtime's plain PTQ with the recipe's settings for comparison; either
way its top-1 agreement with the FP32 graph on validation and which ops run in INT8."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable


def post_training_int8(run, source: str, fp32: Path, out: Path, *, tuned: bool,
                       qat: Callable[[Path], Path] | None = None) -> dict[str, Any]:
    """INT8 of `fp32` (the variant `source`) to `out`, calibrated on the run's calibration rows. `qat(workdir)`, when
    given, is the search's last resort: an FP32 ONNX graph fine-tuned with fake quantization."""
    from runtime.measure import predict
    from common.compare import top1_agreement
    from compress.driver import WORKDIR_PREFIX
    from compress.quantization.search import search_int8
    from compress.quantization.static import op_precision, quantize_static_qdq
    from runtime import load

    data, q = run.data, run.recipe.quantize
    extra = {}
    if tuned:
        with tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, dir=run.out_dir) as work:
            result = search_int8(fp32, out, data.calib.x, data.val.x, data.val.y, q, Path(work),
                                 threads=run.recipe.bench.threads, qat=qat)
        extra["search"] = result.to_dict()
    else:
        quantize_static_qdq(fp32, out, data.calib.x, q)
    with load(fp32) as a, load(out) as b:
        agreement = top1_agreement(predict(a, data.val.x), predict(b, data.val.x))
    return {"source": source, "val_top1_agreement_vs_fp32": agreement, "ops": op_precision(out), **extra}
