"""`compress check`: the accuracy / latency gate on synthesized reports (no benchmarks, milliseconds)."""
from __future__ import annotations

import copy
import json
import re

import pytest
from click.testing import CliRunner

from bench.gate import ReportError, check_reports, ratio_stats, regressed
from compress.cli.main import main


def _lat(p50: float, ci_rel: float = 0.03) -> dict:
    return {"p50": p50, "p90": p50 * 1.2, "p99": p50 * 2, "mean": p50 * 1.1,
            "p50_ci95": [p50 * (1 - ci_rel), p50 * (1 + ci_rel)], "runs": 200, "throughput": 1000 / p50}


def make_report(*, base_acc=0.90, cand_acc=0.89, base_ms=(1.0, 20.0), cand_ms=(0.5, 8.0), ci_rel=0.03) -> dict:
    def variant(name, acc, ms, precision):
        return {"name": name, "artifact": f"{name}.onnx", "precision": precision, "accuracy": acc,
                "size_bytes": 1000 if name == "baseline" else 250,
                "latency_ms": {b: _lat(p, ci_rel) for b, p in zip(("1", "32"), ms)},
                "top1_agreement_vs_baseline": 1.0}

    rows = [variant("baseline", base_acc, base_ms, "fp32"), variant("compressed", cand_acc, cand_ms, "int8")]
    return {"schema_version": 1, "dataset": {"name": "fashion-mnist", "fingerprint": "abc"}, "variants": rows,
            "comparison": {"baseline": "baseline", "candidate": "compressed",
                           "accuracy_drop_pt": 100 * (base_acc - cand_acc),
                           "speedup_p50": {b: base_ms[i] / cand_ms[i] for i, b in enumerate(("1", "32"))},
                           "size_ratio": 4.0}}


def scaled(report: dict, variant: str, factor: float) -> dict:
    """Every latency figure of `variant` (p50 and its CI alike) times `factor`."""
    out = copy.deepcopy(report)
    for v in out["variants"]:
        if v["name"] == variant:
            for s in v["latency_ms"].values():
                for k in ("p50", "p90", "p99", "mean"):
                    s[k] *= factor
                s["p50_ci95"] = [x * factor for x in s["p50_ci95"]]
    return out


def invoke(tmp_path, new: dict | str | bytes, old: dict | str | bytes, *args):
    paths = []
    for name, content in (("new.json", new), ("old.json", old)):
        p = tmp_path / name
        if isinstance(content, dict):
            p.write_text(json.dumps(content))
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        paths.append(str(p))
    return CliRunner().invoke(main, ["check", "--report", paths[0], "--baseline", paths[1], *args],
                              catch_exceptions=False)


# ------------------------------------------------------------------------------------------ the rule itself


def test_regressed_needs_both_point_and_interval_beyond_the_bar():
    old = (1.0, 0.97, 1.03)
    assert regressed(old, (2.0, 1.94, 2.06), 10)[0]  # 2x, intervals far apart
    assert not regressed(old, (1.05, 1.0, 1.1), 10)[0]  # +5 %: below the bar
    assert not regressed(old, (1.15, 0.95, 1.4), 10)[0]  # +15 % but the new interval reaches back to the old
    assert not regressed(old, old, 0)[0]


def test_ratio_interval_is_conservative():
    r = ratio_stats((0.5, 0.45, 0.55), (1.0, 0.9, 1.1))
    assert r[0] == pytest.approx(0.5) and r[1] == pytest.approx(0.45 / 1.1) and r[2] == pytest.approx(0.55 / 0.9)


# ------------------------------------------------------------------------------------------ the CLI


def test_identical_reports_pass(tmp_path):
    r = make_report()
    result = invoke(tmp_path, r, r)
    assert result.exit_code == 0, result.output
    assert "check passed: variant 'compressed', 3 checks" in result.output


def test_accuracy_drop_beyond_the_bar_fails_with_a_table(tmp_path):
    old, new = make_report(cand_acc=0.89), make_report(cand_acc=0.87)  # -2.0 pt
    result = invoke(tmp_path, new, old, "--max-accuracy-drop", "1")
    assert result.exit_code == 1
    assert "FAIL" in result.output and "drop +2.00 pt" in result.output
    assert "Traceback" not in result.output
    assert invoke(tmp_path, new, old, "--max-accuracy-drop", "2.5").exit_code == 0


@pytest.mark.parametrize("mode", ["ratio", "absolute", "both"])
def test_real_latency_regression_fails(tmp_path, mode):
    old = make_report()
    new = scaled(old, "compressed", 2.0)  # the compressed model lost its speed-up: p50 and CI 2x
    result = invoke(tmp_path, new, old, "--latency-mode", mode)
    assert result.exit_code == 1, result.output
    assert re.search(r"latency b1 .*FAIL", result.output) and re.search(r"latency b32 .*FAIL", result.output)
    assert "+100.0%" in result.output


def test_within_noise_difference_passes(tmp_path):
    old = make_report(ci_rel=0.08)
    new = scaled(make_report(ci_rel=0.08), "compressed", 1.12)  # +12 % p50, but the intervals overlap
    assert invoke(tmp_path, new, old, "--latency-mode", "both").exit_code == 0
    slightly = scaled(make_report(), "compressed", 1.06)  # +6 %: under the 10 % bar even with tight intervals
    assert invoke(tmp_path, slightly, make_report(), "--latency-mode", "both").exit_code == 0


def test_machine_drift_passes_ratio_mode_but_fails_absolute(tmp_path):
    """A busier machine slows every variant alike: the within-run ratio holds, absolute p50 does not."""
    old = make_report()
    new = scaled(scaled(old, "baseline", 1.5), "compressed", 1.5)
    assert invoke(tmp_path, new, old).exit_code == 0  # ratio is the default
    assert invoke(tmp_path, new, old, "--latency-mode", "absolute").exit_code == 1


def test_batch_and_variant_options(tmp_path):
    old = make_report()
    new = copy.deepcopy(old)
    cand = new["variants"][1]["latency_ms"]["1"]
    cand.update(_lat(cand["p50"] * 3))  # regression at batch 1 only
    assert invoke(tmp_path, new, old, "--batch", "32").exit_code == 0
    assert invoke(tmp_path, new, old, "--batch", "1,32").exit_code == 1
    assert invoke(tmp_path, new, old, "--variant", "baseline").exit_code == 0


def test_single_variant_report_falls_back_to_absolute():
    one = make_report()
    one["variants"] = one["variants"][1:]
    one["comparison"] = {}
    result = check_reports(scaled(one, "compressed", 2.0), one)
    assert not result.passed
    assert all("absolute p50 compared" in c.note for c in result.checks if c.metric.startswith("latency"))


def test_missing_accuracy_is_skipped_not_failed():
    old, new = make_report(), make_report()
    for r in (old, new):
        for v in r["variants"]:
            v["accuracy"] = None
    result = check_reports(new, old)
    assert result.passed and result.checks[0].status == "skip"


def test_summary_file_gets_a_markdown_table(tmp_path):
    summary = tmp_path / "summary.md"
    r = make_report()
    assert invoke(tmp_path, r, r, "--summary", str(summary)).exit_code == 0
    assert "| accuracy |" in summary.read_text() and "passed" in summary.read_text()


def _schema(version):
    r = make_report()
    r["schema_version"] = version
    return r


def _no_batch_32():
    r = make_report()
    for v in r["variants"]:
        del v["latency_ms"]["32"]
    return r


@pytest.mark.parametrize(
    "new, args, pattern",
    [
        (None, [], r"report .*missing.json does not exist"),
        ("{not json", [], r"new.json is not valid JSON: .* at line 1"),
        (b"\x89PNG\x00\xff\xfe", [], r"new.json is not a text file"),
        ("[1, 2]", [], r"new.json must hold a JSON object, found list"),
        (_schema(2), [], r"schema_version 2; this gate reads schema_version 1"),
        (_schema(None), [], r"schema_version None"),
        ({"schema_version": 1, "variants": []}, [], r"lists no variants"),
        (make_report(), ["--variant", "tiny"], r"variant 'tiny' not in .*; it has: baseline, compressed"),
        (_no_batch_32(), ["--batch", "32"], r"no latency at batch 32; it has batches 1"),
        (make_report(), ["--batch", "x"], r"--batch 'x' must be a comma-separated list of integers"),
        (make_report(), ["--max-latency-regression", "-5"], r"must be >= 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, new, args, pattern):
    old = make_report()
    if new is None:
        result = CliRunner().invoke(main, ["check", "--report", str(tmp_path / "missing.json"), "--baseline",
                                           str(tmp_path / "missing.json"), *args], catch_exceptions=False)
    else:
        result = invoke(tmp_path, new, old, *args)
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert text.startswith("error: ") and re.search(pattern, text), text


def test_report_error_is_a_compress_error():
    from common.errors import CompressError

    assert issubclass(ReportError, CompressError) and ReportError.exit_code == 2


def _with_blocks(report: dict, per_round_load: list[float], cand_factor: float = 1.0) -> dict:
    """Add per-block medians: every round's load slows both variants alike (they run back to back)."""
    out = copy.deepcopy(report)
    for v in out["variants"]:
        f = cand_factor if v["name"] == "compressed" else 1.0
        for s in v["latency_ms"].values():
            base_p50 = s["p50"]
            s["block_p50"] = [base_p50 * f * load for load in per_round_load]
            s["p50"] = float(sorted(s["block_p50"])[len(per_round_load) // 2])
            s["p50_ci95"] = [min(s["block_p50"]), max(s["block_p50"])]
    return out


def test_paired_rounds_cancel_bursty_load_and_still_catch_a_regression():
    quiet = _with_blocks(make_report(), [1.0, 1.02, 0.99, 1.01, 1.0, 0.98, 1.01, 1.0])
    bursty = [1.0, 1.6, 0.95, 2.2, 1.3, 1.0, 1.8, 1.1]  # another job comes and goes
    same = check_reports(_with_blocks(make_report(), bursty), quiet)
    assert same.passed, [c.note for c in same.checks]
    assert all("per-round ratios" in c.note for c in same.checks if c.metric.startswith("latency"))
    slower = check_reports(_with_blocks(make_report(), bursty, cand_factor=1.5), quiet)
    assert [c.passed for c in slower.checks if c.metric.startswith("latency")] == [False, False]
    unpaired = check_reports(_with_blocks(make_report(), bursty, cand_factor=1.5), quiet, paired=False)
    assert unpaired.passed  # the medians' CIs alone are too wide under that load to call it
