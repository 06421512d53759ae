"""The environment recorded next to every figure: CPU, cores, threads, library versions."""
from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("numpy", "onnxruntime", "onnx", "torch", "torch-pruning", "onnxscript", "ai-edge-litert", "litert-torch")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def int8_class(flags: set[str]) -> str:
    """The CPU class that decides whether INT8 pays here: the widest integer dot-product instructions present."""
    for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"),
                       ("avx512f", "AVX-512 (no VNNI)"), ("avx2", "AVX2"), ("i8mm", "Arm I8MM"),
                       ("asimddp", "Arm dot product")):
        if flag in flags:
            return name
    return "no SIMD dot product"


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def describe(threads: int) -> dict:
    return {
        "cpu": cpu_model(),
        "int8_class": int8_class(flags := cpu_flags()),
        "cpu_flags": sorted(flags & set(INT8_FLAGS)),
        "cores": os.cpu_count(),
        "threads": threads,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions(),
    }
