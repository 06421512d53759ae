"""An edge app in one file: classify every image in a folder with a compiled artifact, using only the runtime.

    python -m venv app && app/bin/pip install ./runtime     # the runtime alone: numpy + onnxruntime, no torch
    app/bin/python examples/classify_folder.py MODEL.onnx|MODEL.tflite FOLDER [--threads 2] [--isolate]

(`pip install './runtime[litert]'` adds LiteRT for .tflite artifacts.) Run from a source checkout without the
runtime installed, the script falls back to the repository's runtime/ folder.

Reads .npy (one H x W image, or N x H x W images), binary or ASCII PGM, and 8-bit PNG (grey, RGB, RGBA;
colour is averaged to grey) with numpy and the standard library only; no torch, no Pillow. The artifact's
sidecar (MODEL.onnx.meta.json) supplies the preprocessing and the label names. Prints one line per image:
name, label, latency of that image's inference in milliseconds; then a summary.
"""
from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

try:
    import runtime
except ImportError:  # run from a source checkout: the repository root holds runtime/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import runtime

EXTENSIONS = (".npy", ".pgm", ".png")


class ImageError(ValueError):
    """An image file that this app cannot read; the message names the file and why."""


def read_pgm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic = data[:2]
    if magic not in (b"P5", b"P2"):
        raise ImageError(f"{path.name}: not a PGM file (magic {magic!r})")
    # header: magic, width, height, maxval, separated by whitespace, with # comments
    fields, pos = [], 2
    while len(fields) < 3:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise ImageError(f"{path.name}: truncated PGM header")
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if magic == b"P2":
        pixels = np.array(data[pos:].split(), dtype=np.int64)[: width * height]
    else:
        pos += 1  # the single whitespace byte after maxval
        dtype = np.uint8 if maxval < 256 else np.dtype(">u2")
        pixels = np.frombuffer(data, dtype=dtype, count=width * height, offset=pos) if \
            len(data) - pos >= width * height * np.dtype(dtype).itemsize else np.empty(0)
    if pixels.size != width * height:
        raise ImageError(f"{path.name}: PGM holds fewer than {width}x{height} pixels (truncated)")
    pixels = pixels.reshape(height, width).astype(np.float64)
    return np.round(pixels * (255.0 / maxval)).astype(np.uint8)


def read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ImageError(f"{path.name}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
    if header is None or not idat:
        raise ImageError(f"{path.name}: PNG without IHDR or IDAT (truncated?)")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ImageError(f"{path.name}: only 8-bit non-interlaced grey/RGB/RGBA PNG is supported "
                         f"(bit depth {depth}, colour type {colour}, interlace {interlace})")
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    except zlib.error as e:
        raise ImageError(f"{path.name}: corrupt PNG data ({e})") from None
    stride = width * channels
    if raw.size != height * (stride + 1):
        raise ImageError(f"{path.name}: PNG data has {raw.size} bytes, expected {height * (stride + 1)}")
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):  # undo the per-row filters (PNG spec, section 9)
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        else:
            cur = np.zeros(stride, dtype=np.int32)
            for x in range(stride):
                a = cur[x - channels] if x >= channels else 0
                b = prev[x]
                c = prev[x - channels] if x >= channels else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                elif kind == 4:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                else:
                    raise ImageError(f"{path.name}: unknown PNG filter {kind}")
                cur[x] = (line[x] + pred) & 0xFF
        out[y], prev = cur, cur
    pixels = out.reshape(height, width, channels)
    grey = pixels[..., :3].mean(-1) if channels >= 3 else pixels[..., 0]
    return np.round(grey).astype(np.uint8)


def read_images(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, H x W uint8 image) for each image the file holds."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ImageError(f"{path.name}: unreadable .npy ({e})") from None
        if arr.ndim == 2:
            yield path.name, arr
        elif arr.ndim == 3:
            for i, image in enumerate(arr):
                yield f"{path.name}[{i}]", image
        else:
            raise ImageError(f"{path.name}: expected H x W or N x H x W, got shape {list(arr.shape)}")
    elif suffix == ".pgm":
        yield path.name, read_pgm(path)
    elif suffix == ".png":
        yield path.name, read_png(path)


def classify_folder(model: runtime.Runner, folder: str | Path) -> Iterator[tuple[str, str | None, float, str]]:
    """(name, label or None, latency in ms, error message or "") for every image in `folder`, sorted by name."""
    spec = model.inputs[0]
    want = tuple(d for d in spec.shape[-2:])
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in EXTENSIONS):
        try:
            for name, image in read_images(path):
                if image.ndim != 2 or any(w is not None and w != s for w, s in zip(want, image.shape)):
                    yield name, None, 0.0, f"image is {list(image.shape)}, the model expects {list(want)}"
                    continue
                start = time.perf_counter()
                label = model.predict(image[None])[0]
                yield name, label, (time.perf_counter() - start) * 1000.0, ""
        except (ImageError, runtime.InputError) as e:
            yield path.name, None, 0.0, str(e)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify every image in a folder with an edge artifact.")
    parser.add_argument("model", help="an .onnx or .tflite artifact with its .meta.json sidecar")
    parser.add_argument("folder", help="a folder of .npy, .pgm or .png images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--isolate", action="store_true", help="probe-load the model in a child process first")
    args = parser.parse_args(argv)
    if not Path(args.folder).is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    try:
        model = runtime.load(args.model, threads=args.threads, isolate=args.isolate)
    except runtime.RuntimeFailure as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    latencies, failed = [], 0
    with model:
        for name, label, ms, error in classify_folder(model, args.folder):
            if label is None:
                failed += 1
                print(f"{name}\tERROR\t{error}")
            else:
                latencies.append(ms)
                print(f"{name}\t{label}\t{ms:.3f} ms")
    if latencies:
        print(f"# {len(latencies)} images classified, median {np.median(latencies):.3f} ms per image"
              + (f", {failed} skipped" if failed else ""))
    else:
        print(f"# no images classified ({failed} skipped)")
    return 0 if latencies or not failed else 1


if __name__ == "__main__":
    sys.exit(main())
