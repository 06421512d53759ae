"""A pure-Python structural check of an ONNX file, so that corrupt files are refused before native code sees them.

It walks the protobuf wire format of ModelProto (no onnx or protobuf package needed: the runtime extra has
only numpy + onnxruntime), skipping the payload of weights, and checks what a bit flip or a truncation
breaks first: well-formed fields and lengths, the fields a model must have, sane tensor dims and types,
raw weight sizes that match their dims, UTF-8 names. It is cheap (the weights are never decoded) and it is
not a full ONNX checker: ONNX Runtime still validates the graph itself when it loads it.
"""
from __future__ import annotations

from typing import Iterator

# Field kinds: "m:<Message>" (nested message), "s" (UTF-8 string), "b" (bytes), "v" (varint),
# "rv" (repeated varint, packed or not), "rf32" / "rf64" (repeated fixed-size, packed or not), "f32".
_SCHEMA: dict[str, dict[int, str]] = {
    "Model": {1: "v", 2: "s", 3: "s", 4: "s", 5: "v", 6: "s", 7: "m:Graph", 8: "m:OpsetId", 14: "m:StringPair",
              20: "m:TrainingInfo", 25: "m:Function"},
    "OpsetId": {1: "s", 2: "v"},
    "StringPair": {1: "s", 2: "s"},
    "Graph": {1: "m:Node", 2: "s", 5: "m:Tensor", 15: "m:SparseTensor", 10: "s", 11: "m:ValueInfo",
              12: "m:ValueInfo", 13: "m:ValueInfo", 14: "m:TensorAnnotation", 16: "m:StringPair"},
    "Node": {1: "s", 2: "s", 3: "s", 4: "s", 7: "s", 8: "s", 5: "m:Attribute", 6: "s", 9: "m:StringPair"},
    "Attribute": {1: "s", 21: "s", 13: "s", 20: "v", 2: "f32", 3: "v", 4: "b", 5: "m:Tensor", 6: "m:Graph",
                  22: "m:SparseTensor", 14: "m:Type", 7: "rf32", 8: "rv", 9: "b", 10: "m:Tensor", 11: "m:Graph",
                  23: "m:SparseTensor", 15: "m:Type"},
    "Tensor": {1: "rv", 2: "v", 3: "m:Segment", 4: "rf32", 5: "rv", 6: "b", 7: "rv", 8: "s", 12: "s", 9: "b",
               13: "m:StringPair", 14: "v", 10: "rf64", 11: "rv", 16: "m:StringPair"},
    "Segment": {1: "v", 2: "v"},
    "SparseTensor": {1: "m:Tensor", 2: "m:Tensor", 3: "rv"},
    "ValueInfo": {1: "s", 2: "m:Type", 3: "s", 4: "m:StringPair"},
    "Type": {1: "m:TensorType", 4: "m:SequenceType", 5: "m:MapType", 9: "m:OptionalType", 8: "m:TensorType", 6: "s"},
    "TensorType": {1: "v", 2: "m:Shape"},
    "SequenceType": {1: "m:Type"},
    "OptionalType": {1: "m:Type"},
    "MapType": {1: "v", 2: "m:Type"},
    "Shape": {1: "m:Dim"},
    "Dim": {1: "v", 2: "s", 3: "s"},
    "TensorAnnotation": {1: "s", 2: "m:StringPair"},
    "TrainingInfo": {1: "m:Graph", 2: "m:StringPair", 3: "m:Graph", 4: "m:StringPair"},
    "Function": {1: "s", 4: "s", 5: "s", 6: "s", 7: "m:Node", 8: "s", 9: "m:OpsetId", 10: "s", 11: "m:Attribute",
                 12: "m:ValueInfo", 13: "m:ValueInfo", 14: "m:StringPair", 15: "s"},
}
_WIRE = {"v": (0,), "rv": (0, 2), "f32": (5,), "rf32": (5, 2), "rf64": (1, 2), "s": (2,), "b": (2,)}
# TensorProto.DataType -> bytes per element (0 = not fixed-size: string, or a sub-byte type packed in raw_data).
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 8: 0, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16,
             16: 2, 17: 1, 18: 1, 19: 1, 20: 1, 21: 0, 22: 0, 23: 0, 24: 0, 25: 0, 26: 0}
_MAX_DEPTH = 64
_MAX_IR_VERSION = 64


class CorruptModel(Exception):
    """Raised with a short reason; the loader turns it into an ArtifactError naming the file."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise CorruptModel("truncated (a number runs past the end of its field)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise CorruptModel("malformed number (varint longer than 10 bytes)")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yields (field number, wire type, value or payload start, payload end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise CorruptModel("malformed protobuf (field number 0)")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
            continue
        if wire == 2:
            length, pos = _varint(buf, pos, end)
            stop = pos + length
        elif wire == 1:
            stop = pos + 8
        elif wire == 5:
            stop = pos + 4
        else:
            raise CorruptModel(f"malformed protobuf (wire type {wire} in field {field})")
        if stop > end:
            raise CorruptModel(f"truncated (field {field} needs {stop - pos} bytes, {end - pos} left)")
        yield field, wire, pos, stop
        pos = stop


def _text(buf: memoryview, start: int, end: int, what: str) -> str:
    try:
        return str(buf[start:end], "utf-8")
    except UnicodeDecodeError:
        raise CorruptModel(f"{what} is not valid UTF-8") from None


def _as_int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _walk(buf: memoryview, start: int, end: int, kind: str, depth: int, info: dict) -> dict[int, list]:
    """Checks one message and its sub-messages; returns the scalar fields a caller may want to check."""
    if depth > _MAX_DEPTH:
        raise CorruptModel(f"messages nested more than {_MAX_DEPTH} deep")
    schema = _SCHEMA[kind]
    seen: dict[int, list] = {}
    for field, wire, a, b in _fields(buf, start, end):
        ftype = schema.get(field)
        if ftype is None:  # unknown fields are legal protobuf (newer ONNX); their framing is already checked
            continue
        if ftype.startswith("m:"):
            if wire != 2:
                raise CorruptModel(f"malformed {kind} (field {field} should be a message)")
            sub = _walk(buf, a, b, ftype[2:], depth + 1, info)
            if ftype == "m:Tensor":
                _check_tensor(sub, info)
            elif ftype == "m:Node" and not (sub.get(4) or [""])[-1]:
                raise CorruptModel("a node has no op_type")
            if kind == "Model":  # the caller checks the model's own sub-messages
                seen.setdefault(field, []).append(sub)
            continue
        if wire not in _WIRE[ftype]:
            raise CorruptModel(f"malformed {kind} (field {field} has wire type {wire})")
        if ftype == "s":
            seen.setdefault(field, []).append(_text(buf, a, b, f"a {kind} name or string"))
        elif ftype == "rv" and wire == 2:
            vals, pos = [], a
            while pos < b:
                v, pos = _varint(buf, pos, b)
                vals.append(v)
            seen.setdefault(field, []).extend(vals)
        elif wire == 0:
            seen.setdefault(field, []).append(a)
        elif ftype == "b" and kind == "Tensor" and field == 9:
            seen.setdefault(field, []).append(b - a)
    return seen


def _check_tensor(t: dict[int, list], info: dict) -> None:
    name = (t.get(8) or ["?"])[-1]
    dims = [_as_int64(d) for d in t.get(1, [])]
    if any(d < 0 for d in dims):
        raise CorruptModel(f"tensor {name!r} has a negative dimension {dims}")
    dtype = (t.get(2) or [0])[-1]
    if dtype not in _ITEMSIZE:
        raise CorruptModel(f"tensor {name!r} has an unknown data type {dtype}")
    if (t.get(14) or [0])[-1] == 1:
        info["external_data"] = True
        return
    raw = t.get(9)
    if raw and _ITEMSIZE[dtype]:
        count = 1
        for d in dims:
            count *= d
        if raw[-1] != count * _ITEMSIZE[dtype]:
            raise CorruptModel(f"tensor {name!r} holds {raw[-1]} bytes but its dims {dims} need "
                               f"{count * _ITEMSIZE[dtype]}")


def check_onnx_bytes(data: bytes | memoryview) -> dict:
    """Raises CorruptModel if `data` is not a well-formed ONNX ModelProto; returns facts found on the way.

    The returned dict has "ir_version", "opsets" ({domain: version}) and "external_data" (True when some
    weights live in files beside the model, so that it must be loaded from its path).
    """
    buf = memoryview(data)
    if len(buf) == 0:
        raise CorruptModel("empty")
    info: dict = {"external_data": False}
    try:
        top = _walk(buf, 0, len(buf), "Model", 0, info)
    except RecursionError:
        raise CorruptModel("messages nested too deeply") from None
    ir = (top.get(1) or [None])[-1]
    if ir is None:
        raise CorruptModel("no ir_version (not an ONNX model, or its header is damaged)")
    if not 1 <= ir <= _MAX_IR_VERSION:
        raise CorruptModel(f"implausible ir_version {ir}")
    if not top.get(7):
        raise CorruptModel("no graph")
    opsets = {(o.get(1) or [""])[-1]: (o.get(2) or [0])[-1] for o in top.get(8, [])}
    if ir >= 3 and not opsets:
        raise CorruptModel("no opset_import")
    info["ir_version"] = ir
    info["opsets"] = opsets
    return info
