"""The environment recorded next to every figure: CPU, cores, threads, library versions, execution providers, GPU.

Versions are the `__version__` of the modules this process imported (package metadata can name another install
than the one running: a second site-packages, an editable checkout); a package this process never imported is not
listed, since nothing it measured ran on it.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

PACKAGES = ("numpy", "onnxruntime", "onnx", "torch", "torch-pruning", "onnxscript", "ai-edge-litert", "litert-torch")
MODULES = {"torch-pruning": "torch_pruning", "ai-edge-litert": "ai_edge_litert", "litert-torch": "litert_torch"}
ALWAYS = ("numpy", "onnxruntime")  # what every bench runs on: imported to read its version when not yet imported
CUDA = "CUDAExecutionProvider"
NVIDIA_SMI_TIMEOUT_S = 10


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
    """package -> its version: the `__version__` of the module as imported in this process (the install that ran,
    where package metadata can name another one), else its package metadata; packages not installed are left out."""
    import importlib

    out = {"python": platform.python_version()}
    for name in packages:
        module_name = MODULES.get(name, name)
        module = sys.modules.get(module_name)
        if module is None and name in ALWAYS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                module = None
        version = getattr(module, "__version__", None) if module is not None else None
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        out[name] = str(version)
    return out


def gpu_info() -> dict[str, str]:
    """The GPU ONNX Runtime's CUDA provider ran on (device 0 of those visible): name, driver and CUDA versions, from
    torch.cuda where the calling process has already imported torch with CUDA (the runtime never imports it), the
    rest from nvidia-smi; {} when neither can tell (never guessed)."""
    out: dict[str, str] = {}
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            out["name"] = torch.cuda.get_device_name(0)
            out["cuda_torch"] = str(torch.version.cuda)
    except Exception:  # noqa: BLE001 - no torch, or a torch whose CUDA cannot start: fall through to nvidia-smi
        pass
    smi = nvidia_smi()
    if smi:
        out.setdefault("name", smi[0])
        out["driver"] = smi[1]
    try:
        import onnxruntime

        if getattr(onnxruntime, "cuda_version", ""):
            out["cuda_onnxruntime"] = str(onnxruntime.cuda_version)  # the CUDA its wheel was built against
    except ImportError:
        pass
    return out


def nvidia_smi() -> tuple[str, str] | None:
    """(name, driver version) of the first visible GPU from nvidia-smi, or None without it (or on a timeout)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []
    if not lines or "," not in lines[0]:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    if not visible.isdigit() or int(visible) >= len(lines):  # a GPU UUID, or an index nvidia-smi does not list
        return None
    row = lines[int(visible)]
    name, driver = (part.strip() for part in row.split(",", 1))
    return name, driver


def describe(threads: int, providers_used: list[str] | None = None) -> dict:
    """The environment of a bench; `providers_used`: the execution providers its timed sessions really used (the
    GPU is described when CUDA is among them)."""
    used = sorted(set(providers_used or []))
    gpu = gpu_info() if CUDA in used else {}
    return {
        "host": platform.node(),
        "cpu": cpu_model(),
        "int8_class": int8_class(flags := cpu_flags()),
        "cpu_flags": sorted(flags & set(INT8_FLAGS)),
        "cores": os.cpu_count(),
        "threads": threads,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions(),
        **({"providers_used": used} if used else {}),
        **({"gpu": gpu} if gpu else {}),
    }
