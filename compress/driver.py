"""The one driver: runs the stages in order over the content-keyed cache.

Each stage (compress/stages/) declares the inputs its result depends on; the driver derives the cache key from
them (`declared_key`), skips a stage whose record matches and whose outputs are intact, runs it otherwise, and keeps
the records, progress and resume. It never branches on the model family, the data source or the target: those
are plug-ins (compress/families, compress/data, targets) that the stages call through one protocol each.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from common.errors import CompressError
from compress.training import distributed
from compress.cache import StageCache, StageRecord, stage_key

WORKDIR_PREFIX = ".work-"

Outputs = dict[str, Path]


def log(message: str) -> None:
    if distributed.is_main():
        print(message, file=sys.stderr, flush=True)


def _always(run: "Run") -> bool:
    return True


def _nothing(run: "Run", record: StageRecord) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    `inputs` name what the result depends on, each as "kind:name": `recipe:<section or field>`, `data:fingerprint`,
    `key:<earlier stage>` (that stage's key), `run:<attribute of Run>`, or a function of the run. `outputs(run)` names the artifacts the
    stage writes (the driver registers them in `run.artifacts` whether the stage ran or was cached);
    `body(run, outputs)` writes them and returns the record's metrics; `after(run, record)` runs either way (a gate,
    loading what later stages use). `all_ranks`: under torchrun every rank runs it (data-parallel training);
    the first stage without it ends the other ranks."""

    name: str
    inputs: tuple[str | Callable[["Run"], Any], ...]
    outputs: Callable[["Run"], Outputs]
    body: Callable[["Run", Outputs], dict[str, Any]]
    enabled: Callable[["Run"], bool] = _always
    after: Callable[["Run", StageRecord], None] = _nothing
    all_ranks: bool = False


@dataclass
class Run:
    """What the stages share: the recipe, the plug-ins chosen for it, the data and the artifacts so far."""

    recipe: Any
    out_dir: Path
    family: Any  # compress.families.ModelFamily
    source: Any  # compress.data.DataSource
    target: Any  # a registered target module
    data: Any = None  # the family's model-ready data set
    cache: StageCache = None
    keys: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    done: dict[str, StageRecord] = field(default_factory=dict)
    records: list[tuple[StageRecord, bool]] = field(default_factory=list)
    teacher: Any = None  # the trained baseline, loaded once training is done
    handoff: dict[str, Any] = field(default_factory=dict)  # models a stage trained in memory for a later stage

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = StageCache(self.out_dir)

    def path(self, name: str) -> Path:
        return self.out_dir / name

    @property
    def distill_source(self) -> Path:
        """The student distillation starts from: the pruned weights before fine-tuning, or the baseline."""
        return self.artifacts.get("pruned.raw") or self.artifacts["baseline"]

    @property
    def fp32_checkpoints(self) -> dict[str, Path]:
        """The FP32 models of this run by variant name: baseline, and the students that were made."""
        roles = (("baseline", "baseline"), ("pruned", "pruned"), ("distilled", "distilled"))
        return {name: self.artifacts[role] for name, role in roles if role in self.artifacts}

    @property
    def student_val(self) -> dict[str, float]:
        return {name: self.done[stage].metrics["val_accuracy"]
                for name, stage in (("pruned", "prune"), ("distilled", "distill")) if stage in self.done}

    @property
    def student_name(self) -> str:
        """The student that goes on to INT8: whichever of fine-tuned and distilled did better on validation."""
        val = self.student_val
        return max(val, key=lambda n: (val[n], n == "distilled")) if val else "baseline"

    def cached(self, name: str, inputs: tuple, body: Callable[[], tuple[list[Path], dict[str, Any]]]) -> StageRecord:
        """Run `body` unless a finished stage `name` with the key of `inputs` and intact outputs exists.

        Under torchrun every rank runs the body; rank 0 alone writes the outputs and the record, and the others
        wait for it before reading them."""
        key = declared_key(name, inputs)
        record = self.cache.lookup(name, key)
        if record is not None:
            log(f"[{name}] cached ({record.wall_s:.1f}s saved)")
            self.records.append((record, True))
            return record
        log(f"[{name}] running")
        start = time.perf_counter()
        outputs, metrics = body()
        wall = time.perf_counter() - start
        if distributed.is_main():
            record = self.cache.store(name, key, outputs, metrics, wall)
        distributed.barrier()
        if not distributed.is_main():
            record = self.cache.lookup(name, key)
            if record is None:
                raise CompressError(f"[{name}] rank {distributed.rank()} cannot see rank 0's outputs in {self.out_dir}")
        log(f"[{name}] done in {record.wall_s:.1f}s")
        self.records.append((record, False))
        return record


def declared_key(name: str, inputs: tuple) -> str:
    """The one place a stage's cache key is made: its name, the toolkit's version and its declared inputs."""
    from common.version import __version__

    return stage_key(name, __version__, *inputs)


OMIT_DEFAULT = "key_omits_default"  # field metadata: a setting added later leaves the keys of earlier runs valid
IGNORED = "key_ignores"  # field metadata: a setting that never changes a result (e.g. train.device) is in no key


def plain(value: Any) -> Any:
    """A declared input as it enters the key: sections as dicts (without settings added later while they keep their
    default, so that an upgrade does not invalidate finished stages, nor settings that never change a result),
    files by name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = dataclasses.asdict(value)
        for f in dataclasses.fields(value):
            if f.metadata.get(IGNORED) or (f.metadata.get(OMIT_DEFAULT) and out[f.name] == _default(f)):
                del out[f.name]
        return out
    if isinstance(value, Path):
        return value.name
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # a nested section: compared as the dict asdict makes
        value = f.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return f.default


def resolve(run: Run, ref: str | Callable[[Run], Any]) -> Any:
    if callable(ref):  # a stage's own reading of the recipe, e.g. the settings of a section it depends on
        return plain(ref(run))
    kind, _, name = ref.partition(":")
    if kind == "recipe":
        return plain(getattr(run.recipe, name))
    if kind == "data":
        return getattr(run.data, name)
    if kind == "key":
        return run.keys[name]
    if kind == "run":
        return plain(getattr(run, name))
    raise ValueError(f"stage input {ref!r}: expected recipe:, data:, key: or run:")


def execute(run: Run, stage: Stage) -> StageRecord | None:
    """Derive the stage's key (also for a disabled stage: later keys may name it); run or reuse it."""
    inputs = tuple(resolve(run, ref) for ref in stage.inputs)
    run.keys[stage.name] = declared_key(stage.name, inputs)
    if not stage.enabled(run):
        return None
    outputs = stage.outputs(run)
    record = run.cached(stage.name, inputs, lambda: (list(outputs.values()), stage.body(run, outputs)))
    run.artifacts.update(outputs)
    run.done[stage.name] = record
    stage.after(run, record)
    return record


def run_stages(run: Run, stages: tuple[Stage, ...]) -> bool:
    """Run `stages` in order; False on ranks other than 0 once the data-parallel stages are done."""
    ranks_joined = True
    for stage in stages:
        if ranks_joined and not stage.all_ranks:
            distributed.barrier()
            distributed.shutdown()
            ranks_joined = False
            if not distributed.is_main():
                return False
        execute(run, stage)
    return True


def prepare_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test.{os.getpid()}"  # one per process: ranks probing one file raced
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise CompressError(f"--out {out_dir} is not writable: {e.strerror or e}") from None
    if distributed.is_main():
        remove_stale_temporaries(out_dir)
    distributed.barrier()
    return out_dir


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files and work dirs left by a run that was killed mid-write; never read, safe to delete."""
    import shutil

    for path in out_dir.rglob(".*.tmp*"):
        if path.is_file():
            path.unlink(missing_ok=True)
    for path in out_dir.glob(WORKDIR_PREFIX + "*"):
        shutil.rmtree(path, ignore_errors=True)
