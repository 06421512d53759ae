"""Content-keyed stage cache: a stage is skipped when its key matches and its outputs are intact."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import write_json
from common.digest import file_digest


def stage_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class StageRecord:
    name: str
    key: str
    outputs: dict[str, str]  # file name (relative to the run dir) -> sha256
    metrics: dict[str, Any]
    wall_s: float


class StageCache:
    """Records live in `<out>/stages/<name>.json`, written only after every output is in place."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.dir = out_dir / "stages"

    def lookup(self, name: str, key: str) -> StageRecord | None:
        path = self.dir / f"{name}.json"
        try:
            data = json.loads(path.read_text())
            record = StageRecord(**data)
        except (OSError, ValueError, TypeError):
            return None
        if record.key != key:
            return None
        for rel, digest in record.outputs.items():
            target = self.out_dir / rel
            if not target.is_file() or file_digest(target) != digest:
                return None
        return record

    def store(self, name: str, key: str, outputs: list[Path], metrics: dict[str, Any], wall_s: float) -> StageRecord:
        record = StageRecord(
            name, key, {str(p.relative_to(self.out_dir)): file_digest(p) for p in outputs}, metrics, wall_s
        )
        write_json(self.dir / f"{name}.json", record.__dict__)
        return record
