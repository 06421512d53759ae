"""What a bench takes and what it measured before any statistics: the variants (files to score and time), the
raw measurements (here or on a device), and the fields naming the runtime and provider that ran each one."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNTIME_NAMES = {"tflite": "litert"}  # a runner's backend -> the runtime the report names


CPU_PROVIDER = "CPUExecutionProvider"


CUDA_PROVIDER = "CUDAExecutionProvider"


def provider_fields(used: list[str] | None, wanted) -> dict[str, Any]:
    """A row's `provider` (the first the session really used, `used`; "CPU" for a runtime without providers, LiteRT)
    and, when the bench asked for another provider than the CPU (`wanted`, the target's), whether it fell back to it."""
    used = list(used or [])
    out: dict[str, Any] = {"provider": used[0] if used else "CPU", "providers": used or ["CPU"]}
    if used and wanted and wanted[0] != CPU_PROVIDER:
        out["fell_back_to_cpu"] = used[0] == CPU_PROVIDER
    return out


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    precision: str
    description: str = ""
    # files fixed to one batch size each (a .tflite converted per bench batch): batch -> file; `path` is one of them
    per_batch: dict[int, Path] | None = None

    def path_at(self, batch: int) -> Path:
        return self.per_batch[batch] if self.per_batch else self.path

    def runs_at(self, batch: int, fixed: int | None) -> bool:
        """Whether this variant can be timed at `batch` (`fixed`: the batch its `path` is fixed to, or None)."""
        if self.per_batch:
            return batch in self.per_batch
        return fixed is None or fixed == batch


@dataclass
class Measured:
    """What a bench measured where the variants ran (here, or on a device over SSH), before any statistics."""

    logits: dict[str, Any]  # variant -> float logits on the split's rows
    extra_logits: dict[str, Any]  # variant -> logits on the held-out extra rows (validation), when given
    fields: dict[str, dict[str, Any]]  # variant -> runtime, provider(s) and the like, as the row reports them
    blocks: dict[int, dict[str, list]]  # batch -> variant -> per-round arrays of per-call times (ms)
    memory: dict[str, dict[str, float] | None]  # variant -> peak RSS at `top`
    top: int  # the batch the memory was measured at
    measured_on: dict[str, Any] | None = None  # the device's environment, when not this machine
