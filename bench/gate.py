"""The CI gate: compare a new report.json with a baseline report.json on accuracy and latency.

Latency rule (both conditions must hold for a regression to fail the gate):

    new p50          > old p50          * (1 + pct/100)     the point estimate moved past the bar, and
    new CI95 lower   > old CI95 upper   * (1 + pct/100)     the intervals are apart by more than the bar,

so a difference that lies inside the bootstrap intervals of the medians is noise, not a regression.

Which p50 is compared (`mode`):

- ``ratio`` (default): the candidate's p50 divided by the p50 of its own run's baseline variant
  (1 / ``comparison.speedup_p50``). On these shared machines absolute times moved by up to 50 % between
  runs, while ratios measured within one run held to about +-10 %; dividing by a variant timed in the same
  run, in interleaved blocks, cancels the machine's drift. The ratio's interval is bounded conservatively
  from the two medians' intervals: [cand_lo / base_hi, cand_hi / base_lo]; when the report stores the
  median of every timed block (``block_p50``), the interval comes instead from the per-round ratios
  (baseline and candidate blocks are timed back to back in each round), bootstrapped over rounds. Catches "the compressed model
  lost its speed-up"; does not catch "everything got slower" (e.g. a slower onnxruntime), which is what
  ``absolute`` is for. A run without a separate baseline variant falls back to ``absolute`` (noted in the table).
- ``absolute``: the candidate's own p50 and p50_ci95 in milliseconds. Trust it only on a dedicated machine.
- ``both``: fail when either fails.

Accuracy: the drop in points of the variant's accuracy from the baseline report to the new report.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from bench.latency import paired_ratio_stats
from common.errors import CompressError

SCHEMA_VERSION = 1
MODES = ("ratio", "absolute", "both")
DEFAULT_MAX_ACCURACY_DROP = 1.0  # points
DEFAULT_MAX_LATENCY_REGRESSION = 10.0  # percent


class ReportError(CompressError):
    """A report file is missing, unreadable, of another schema, or lacks what the gate needs."""


@dataclass(frozen=True)
class Check:
    metric: str  # "accuracy" or "latency b32 (ratio)" ...
    old: float | None
    new: float | None
    limit: str  # human-readable bar
    passed: bool | None  # None = skipped
    note: str = ""

    @property
    def status(self) -> str:
        return "skip" if self.passed is None else ("ok" if self.passed else "FAIL")


@dataclass(frozen=True)
class GateResult:
    variant: str
    mode: str
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, "mode": self.mode, "passed": self.passed,
                "checks": [{**asdict(c), "status": c.status} for c in self.checks], "warnings": self.warnings}


# ---------------------------------------------------------------------------------------------- reading


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a report.json; every problem is one ReportError line that names the file."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"report {p} does not exist; write one with 'compress run' or 'compress bench'")
    if not p.is_file():
        raise ReportError(f"report {p} is not a file")
    try:
        report = json.loads(p.read_text())
    except UnicodeDecodeError:
        raise ReportError(f"report {p} is not a text file (expected report.json)") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"report {p} is not valid JSON: {e.msg} at line {e.lineno}") from None
    except OSError as e:
        raise ReportError(f"report {p} cannot be read: {e.strerror or e}") from None
    validate_report(report, str(p))
    return report


def validate_report(report: Any, where: str = "report") -> None:
    if not isinstance(report, dict):
        raise ReportError(f"{where} must hold a JSON object, found {type(report).__name__}")
    version = report.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReportError(f"{where} has schema_version {version!r}; this gate reads schema_version {SCHEMA_VERSION}")
    variants = report.get("variants")
    if not isinstance(variants, list) or not variants:
        raise ReportError(f"{where} lists no variants")
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not isinstance(v.get("latency_ms"), dict):
            raise ReportError(f"{where}: variants[{i}] lacks a name or latency_ms")


def variant_names(report: dict) -> list[str]:
    return [v["name"] for v in report["variants"]]


def get_variant(report: dict, name: str, where: str) -> dict:
    for v in report["variants"]:
        if v["name"] == name:
            return v
    raise ReportError(f"variant {name!r} not in {where}; it has: {', '.join(variant_names(report))} "
                      "(pick one with --variant)")


def baseline_name(report: dict) -> str | None:
    """The run's own baseline variant: comparison.baseline, else a variant called 'baseline'."""
    name = (report.get("comparison") or {}).get("baseline")
    if name in variant_names(report):
        return name
    return "baseline" if "baseline" in variant_names(report) else None


def default_variant(report: dict) -> str:
    """The variant the gate checks when none is named: the report's comparison candidate, else 'compressed'."""
    name = (report.get("comparison") or {}).get("candidate")
    return name if name in variant_names(report) else "compressed"


def _stats(variant: dict, batch: str, where: str) -> tuple[float, float, float]:
    s = variant["latency_ms"].get(batch)
    if not isinstance(s, dict):
        raise ReportError(f"{where}: variant {variant['name']!r} has no latency at batch {batch}; "
                          f"it has batches {', '.join(variant['latency_ms']) or 'none'}")
    try:
        p50 = float(s["p50"])
        lo, hi = (float(x) for x in s.get("p50_ci95") or (p50, p50))
    except (KeyError, TypeError, ValueError):
        raise ReportError(f"{where}: latency of {variant['name']!r} at batch {batch} lacks p50 / p50_ci95") from None
    if not p50 > 0:
        raise ReportError(f"{where}: p50 of {variant['name']!r} at batch {batch} is {p50}, not a positive time")
    return p50, min(lo, p50), max(hi, p50)


# ---------------------------------------------------------------------------------------------- rules


def regressed(old: tuple[float, float, float], new: tuple[float, float, float], pct: float) -> tuple[bool, float]:
    """(p50, lo, hi) old vs new -> (regression beyond the noise?, change of p50 in percent)."""
    bar = 1.0 + pct / 100.0
    change = 100.0 * (new[0] / old[0] - 1.0)
    return (new[0] > old[0] * bar and new[1] > old[2] * bar), change


def ratio_stats(cand: tuple[float, float, float], base: tuple[float, float, float]) -> tuple[float, float, float]:
    """Candidate / baseline p50 with a conservative interval from the two medians' intervals."""
    return cand[0] / base[0], cand[1] / base[2], cand[2] / base[1]


def _latency_check(metric: str, old: tuple, new: tuple, pct: float, unit: str, note: str = "") -> Check:
    bad, change = regressed(old, new, pct)
    detail = f"{change:+.1f}%; CI new [{new[1]:.4g}, {new[2]:.4g}] vs old [{old[1]:.4g}, {old[2]:.4g}]{unit}"
    if not bad and new[0] > old[0] * (1 + pct / 100):
        detail += "; within noise"
    return Check(metric, old[0], new[0], f"<= +{pct:g}% beyond CI", not bad, "; ".join(x for x in (detail, note) if x))


def check_reports(new: dict, old: dict, *, variant: str | None = None, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
                  max_latency_regression: float = DEFAULT_MAX_LATENCY_REGRESSION, batches: Iterable[str] | None = None,
                  mode: str = "ratio", paired: bool = True, new_where: str = "new report", old_where: str = "baseline report") -> GateResult:
    """Gate `new` against `old`. Raises ReportError on unusable input; returns every check, passed or not."""
    if mode not in MODES:
        raise ReportError(f"latency mode {mode!r} unknown; known: {', '.join(MODES)}")
    if max_accuracy_drop < 0 or max_latency_regression < 0:
        raise ReportError("--max-accuracy-drop and --max-latency-regression must be >= 0")
    validate_report(new, new_where)
    validate_report(old, old_where)
    name = variant or default_variant(old)
    shipped = budget_check(new)
    if shipped is not None and not shipped.passed:  # the run itself shipped nothing: there is nothing to compare
        return GateResult(name, mode, [shipped])
    v_new, v_old = get_variant(new, name, new_where), get_variant(old, name, old_where)
    warnings: list[str] = []
    checks: list[Check] = [shipped] if shipped is not None else []

    fp_new, fp_old = ((r.get("dataset") or {}).get("fingerprint") for r in (new, old))
    if fp_new and fp_old and fp_new != fp_old:
        warnings.append(f"the reports were measured on different data (fingerprint {fp_old} vs {fp_new}); "
                        "accuracy is compared anyway")
    metric = _metric(new, old, warnings)
    acc_old, acc_new = v_old.get("accuracy"), v_new.get("accuracy")
    if isinstance(acc_old, (int, float)) and isinstance(acc_new, (int, float)):
        drop = 100.0 * (acc_old - acc_new)
        checks.append(Check(metric, acc_old, acc_new, f"drop <= {max_accuracy_drop:g} pt",
                            drop <= max_accuracy_drop + 1e-9, f"drop {drop:+.2f} pt"))
    else:
        checks.append(Check(metric, acc_old, acc_new, f"drop <= {max_accuracy_drop:g} pt", None,
                            "no accuracy in a report (benched without --data)"))

    common = [b for b in v_old["latency_ms"] if b in v_new["latency_ms"]]
    if batches:
        wanted = [str(b) for b in batches]
        for b in wanted:
            _stats(v_old, b, old_where)
            _stats(v_new, b, new_where)
        common = wanted
    if not common:
        raise ReportError(f"{new_where} and {old_where} share no batch size for variant {name!r}")

    base_new, base_old = baseline_name(new), baseline_name(old)
    ratio_ok = base_new not in (None, name) and base_old not in (None, name)
    for b in common:
        s_old, s_new = _stats(v_old, b, old_where), _stats(v_new, b, new_where)
        if mode in ("ratio", "both"):
            if ratio_ok:
                bo, bn = get_variant(old, base_old, old_where), get_variant(new, base_new, new_where)
                r_old = ratio_stats(s_old, _stats(bo, b, old_where))
                r_new = ratio_stats(s_new, _stats(bn, b, new_where))
                how = "CI from the medians' CIs"
                if paired:
                    p_old = paired_ratio_stats(v_old["latency_ms"][b], bo["latency_ms"][b])
                    p_new = paired_ratio_stats(v_new["latency_ms"][b], bn["latency_ms"][b])
                    if p_old and p_new:
                        r_old, r_new, how = p_old, p_new, "CI from per-round ratios"
                checks.append(_latency_check(f"latency b{b} (p50 / {base_new} p50)", r_old, r_new,
                                             max_latency_regression, "", how))
            elif mode == "ratio":
                checks.append(_latency_check(f"latency b{b} (p50 ms)", s_old, s_new, max_latency_regression, " ms",
                                             "no separate baseline variant in a run: absolute p50 compared"))
        if mode in ("absolute", "both"):
            checks.append(_latency_check(f"latency b{b} (p50 ms)", s_old, s_new, max_latency_regression, " ms"))
    return GateResult(name, mode, checks, warnings)


def _metric(new: dict, old: dict, warnings: list[str]) -> str:
    """The accuracy check's name: "accuracy", or "agreement" for unlabelled data (top-1 agreement with each run's
    own baseline); a warning when the two reports score differently."""
    kinds = [r.get("accuracy_metric", "accuracy") for r in (old, new)]
    if kinds[0] != kinds[1]:
        warnings.append(f"the reports score differently ({kinds[0]} vs {kinds[1]}); compared anyway")
    return "accuracy" if kinds[1] == "accuracy" else "agreement (top-1 vs baseline)"


def budget_check(report: dict) -> Check | None:
    """Whether the run shipped a model within its own accuracy budget (reports from `compress run`)."""
    budget = report.get("budget")
    if not isinstance(budget, dict):
        return None
    limit = f"within the run's budget ({budget.get('max_accuracy_drop_pt')} pt vs its baseline)"
    shipped = budget.get("shipped")
    note = f"shipped {shipped}" if shipped else str(budget.get("why") or "nothing shipped")
    return Check("shipped", None, None, limit, shipped is not None, note)


def check_files(new_path: str | os.PathLike, old_path: str | os.PathLike, **kwargs) -> GateResult:
    return check_reports(load_report(new_path), load_report(old_path), new_where=str(new_path),
                         old_where=str(old_path), **kwargs)


# ---------------------------------------------------------------------------------------------- output


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def table_rows(result: GateResult) -> tuple[list[str], list[list[str]]]:
    header = ["check", "baseline", "new", "bar", "status", "detail"]
    return header, [[c.metric, _fmt(c.old), _fmt(c.new), c.limit, c.status, c.note] for c in result.checks]


def to_markdown(result: GateResult) -> str:
    header, rows = table_rows(result)
    verdict = "passed" if result.passed else "FAILED"
    lines = [f"### compress check: {result.variant} {verdict} (latency mode: {result.mode})", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             *("| " + " | ".join(r) + " |" for r in rows)]
    lines += [f"\n> warning: {w}" for w in result.warnings]
    return "\n".join(lines) + "\n"


def summary_line(result: GateResult) -> str:
    if result.passed:
        return f"check passed: variant {result.variant!r}, {len(result.checks)} checks ({result.mode} latency)"
    return "; ".join(f"{c.metric}: {c.note or c.status}" for c in result.failures)
