"""Files for one interleaved bench on the same photos: the run's FP32 ONNX, ONNX Runtime's quantize_static alone
(defaults: QDQ, S8S8, per-tensor, MinMax; and per-channel), and the toolkit's searched INT8, each with the sidecar
the run would write (EfficientNet-Lite preprocessing: 240, mean/std 0.5)."""
import json, shutil, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.data.images import find_images, read_pixels
from bench.data.splits import pool_splits
from runtime.images import ImageSpec
from onnxruntime.quantization import quantize_static, QuantFormat, CalibrationDataReader

run, out = Path(sys.argv[1]), Path(sys.argv[2]); out.mkdir(exist_ok=True)
spec = ImageSpec((240, 240), 274, (0.5,) * 3, (0.5,) * 3)
files, _, _ = find_images(Path("photos"))
calib_idx = pool_splits(len(files), val_size=5000, test_size=5000, calib_size=60, seed=0, name="p", trains=False)["calib"]
calib = read_pixels([files[i] for i in calib_idx], spec)

import onnx

name = onnx.load(str(run / "baseline.onnx"), load_external_data=False).graph.input[0].name


class R(CalibrationDataReader):
    """The run's 60 calibration photos, in batches of 30."""

    def __init__(self):
        self.it = iter([{name: calib[i:i + 30]} for i in range(0, len(calib), 30)])

    def get_next(self):
        return next(self.it, None)

meta = {"labels": [f"class {i}" for i in range(1000)], "preprocess": spec.to_sidecar()}
for src, dst in ((run / "baseline.onnx", "fp32.onnx"), (run / "baseline.int8.onnx", "toolkit-search.onnx")):
    shutil.copy(src, out / dst)
quantize_static(str(run / "baseline.onnx"), str(out / "ort-default.onnx"), R(), quant_format=QuantFormat.QDQ)
quantize_static(str(run / "baseline.onnx"), str(out / "ort-per-channel.onnx"), R(), quant_format=QuantFormat.QDQ, per_channel=True)
for f in out.glob("*.onnx"):
    (out / (f.name[:-5] + ".onnx.meta.json")).write_text(json.dumps(meta))
print(sorted(p.name for p in out.iterdir()))
