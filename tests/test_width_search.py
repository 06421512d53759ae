"""`prune.ratio: auto`: the choice rules on given points (exact), the recipe's settings, and one small pipeline run
whose report, widths.json, pruned model and report.html must agree with each other (never with a timing)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from common.errors import CompressError
from compress.pruning import width_search as ws
from compress.recipe import DistillConfig, PruneConfig, RecipeError, recipe_from_dict
from tests.conftest import needs_fashion_mnist, small_recipe


def point(ratio: float, p50: float, **kw) -> ws.WidthPoint:
    return ws.WidthPoint(ratio, params=1000, form="int8", p50_ms=p50, p50_ms_fp32=p50, p50_ms_int8=p50,
                         speedup=10.0 / p50, **kw)


def test_a_width_no_faster_than_a_wider_one_is_not_trained():
    points = [point(0.25, 5.0), point(0.5, 4.8), point(0.75, 2.0), point(0.875, 2.1)]
    assert ws.slower_than_a_wider(points) == {0.5: 0.25, 0.875: 0.75}  # 4.8 is within 10 % of 5.0
    assert [p.ratio for p in ws.training_order(points)] == [0.75, 0.25]  # fastest first


def test_the_fastest_width_within_the_allowance_is_picked():
    points = [ws.judged(point(0.25, 5.0), {"distilled": 0.90}, 0.91, 1.0),
              ws.judged(point(0.5, 3.0), {"pruned": 0.905, "distilled": 0.88}, 0.91, 1.0),
              ws.judged(point(0.75, 2.0), {"pruned": 0.85, "distilled": 0.85}, 0.91, 1.0)]
    assert [p.verdict for p in points] == [ws.WITHIN, ws.WITHIN, ws.OVER]
    assert points[1].drop_pt == pytest.approx(0.5) and points[1].student == "pruned"  # judged by its better student
    assert points[2].student == "distilled"  # a tie goes to the distilled one, as the pipeline's student rule
    assert ws.pick(points).ratio == 0.5


def test_with_none_within_the_most_accurate_distilled_width_goes_on():
    points = [point(0.25, 5.0), ws.judged(point(0.5, 3.0), {"distilled": 0.80}, 0.91, 1.0),
              ws.judged(point(0.75, 2.0), {"distilled": 0.85}, 0.91, 1.0)]
    chosen = ws.pick(points)
    assert chosen.ratio == 0.75
    curve = ws.final_curve(points, chosen, {})
    assert [p.verdict for p in curve] == [ws.NOT_TRIED, ws.OVER, ws.CHOSEN]


def test_recipe_takes_auto_and_refuses_what_it_cannot_search():
    assert recipe_from_dict({"prune": {"ratio": "auto"}}).prune.auto
    with pytest.raises(RecipeError, match=r"prune.ratio = 'fast' has the wrong type"):
        recipe_from_dict({"prune": {"ratio": "fast"}})
    with pytest.raises(RecipeError, match=r"prune.auto_ratios\[1\] must be in \[0, 1\)"):
        PruneConfig(ratio="auto", auto_ratios=(0.5, 1.0))
    with pytest.raises(RecipeError, match="needs prune.method channels"):
        PruneConfig(ratio="auto", method="2:4")
    with pytest.raises(RecipeError, match="prune.auto_epochs must be > 0"):
        PruneConfig(ratio="auto", auto_epochs=0)


def test_the_search_key_names_the_schedule_a_null_default_resolves_to():
    """The students' schedules are in the key: a run with another distill schedule must not reuse the search."""
    from types import SimpleNamespace

    from compress.stages.widths import search_settings

    def settings(**distill):
        recipe = recipe_from_dict({"prune": {"ratio": "auto"}, "distill": distill})
        return search_settings(SimpleNamespace(recipe=recipe))

    assert settings(epochs=6)["distill"]["epochs"] == 6.0 and settings(epochs=6) != settings(epochs=2)
    assert settings()["allowance_pt"] == pytest.approx([1.0 - 0.5, 1.0])  # less INT8's share; all where INT8 is slower


def test_a_width_whose_int8_is_slower_may_use_the_whole_budget():
    """It would ship in FP32 (fp32_if_faster), which spends none of INT8's share; auto_max_drop overrides both."""
    from compress.stages.widths import _point, allowance

    recipe = recipe_from_dict({"prune": {"ratio": "auto"}, "budget": {"max_accuracy_drop": 1.0},
                               "quantize": {"max_accuracy_drop": 0.5}})
    int8_faster = _point(recipe, 0.5, 1000, {"baseline": 4.0, "0.5-fp32": 1.0, "0.5-int8": 0.8})
    int8_slower = _point(recipe, 0.5, 1000, {"baseline": 4.0, "0.5-fp32": 1.0, "0.5-int8": 1.2})
    barely = _point(recipe, 0.5, 1000, {"baseline": 4.0, "0.5-fp32": 1.0, "0.5-int8": 1.001})
    tie = _point(recipe, 0.5, 1000, {"baseline": 4.0, "0.5-fp32": 1.0, "0.5-int8": 1.0})
    assert (barely.form, barely.allowance_pt) == ("fp32", 1.0)  # one rule for the form and the allowance
    assert (tie.form, tie.allowance_pt) == ("int8", 0.5)
    assert (int8_faster.form, int8_faster.allowance_pt, int8_faster.speedup) == ("int8", 0.5, 5.0)
    assert (int8_slower.form, int8_slower.allowance_pt, int8_slower.speedup) == ("fp32", 1.0, 4.0)
    assert ws.judged(int8_slower, {"distilled": 0.9}, 0.908, int8_slower.allowance_pt).verdict == ws.WITHIN
    assert ws.judged(int8_faster, {"distilled": 0.9}, 0.908, int8_faster.allowance_pt).verdict == ws.OVER
    no_fallback = recipe_from_dict({"prune": {"ratio": "auto"}, "quantize": {"fp32_if_faster": False}})
    assert _point(no_fallback, 0.5, 1000, {"baseline": 4.0, "0.5-fp32": 1.0, "0.5-int8": 1.2}).allowance_pt == 0.5
    fixed = recipe_from_dict({"prune": {"ratio": "auto", "auto_max_drop": 0.7}})
    assert allowance(fixed) == allowance(fixed, int8_slower=True) == 0.7
    assert allowance(recipe_from_dict({"quantize": {"enabled": False}})) == 1.0


def test_what_cannot_search_widths_is_refused_before_any_work():
    from compress.families.base import ModelFamily
    from compress.plugins import choose
    from compress.stages.widths import check_recipe, refuse_under_torchrun

    class NoSearch(ModelFamily):  # a registered family that prunes but has no width search
        name, kind, archs = "no-search", "image", ("no-search",)

    auto = recipe_from_dict({"prune": {"ratio": "auto"}})
    with pytest.raises(RecipeError, match="no-search models do not search pruning widths"):
        check_recipe(auto, NoSearch())
    with pytest.raises(RecipeError, match="it needs distill.enabled or prune.finetune_epochs > 0"):
        choose(recipe_from_dict({"prune": {"ratio": "auto", "finetune_epochs": 0}, "distill": {"enabled": False}}))
    with pytest.raises(CompressError, match=r"without torchrun \(--nproc 1\)"):
        refuse_under_torchrun(auto, 2)
    choose(auto)  # the bundled CNN searches
    refuse_under_torchrun(auto, 1)


def test_transformer_recipes_refuse_auto_before_any_work():
    from compress.families import for_arch

    recipe = recipe_from_dict({"name": "t", "model": {"arch": "bert"}, "prune": {"ratio": "auto"},
                               "quantize": {"mode": "dynamic"}})
    with pytest.raises(RecipeError, match="prune.ratio auto chooses CNN channel widths"):
        for_arch("bert").check_recipe(recipe)


@needs_fashion_mnist
def test_auto_prunes_at_the_chosen_width_and_reports_the_curve(tmp_path):
    from bench.html import to_html
    from compress.pipeline import run

    ratios = (0.25, 0.5, 0.75)
    recipe = small_recipe(prune=PruneConfig(ratio="auto", round_to=4, finetune_epochs=0.5, auto_ratios=ratios),
                          distill=DistillConfig(epochs=0.5))  # the students' schedules are the stages' own
    report = run(recipe, tmp_path)
    search = report["width_search"]
    assert search == json.loads((tmp_path / "widths.json").read_text())
    curve = {c["ratio"]: c for c in search["curve"]}
    assert sorted(curve) == list(ratios)
    chosen = curve[search["chosen_ratio"]]
    assert [c["verdict"] for c in curve.values()].count(ws.CHOSEN) == 1 and chosen["verdict"] == ws.CHOSEN
    assert chosen["val_accuracy"] is not None  # only a trained width can be chosen
    assert chosen["val_accuracy"] == max(chosen["students"].values()) and set(chosen["students"]) == {"pruned",
                                                                                                  "distilled"}
    assert search["allowance_pt"] == chosen["allowance_pt"]
    for c in curve.values():  # the small recipe's budget less INT8's share, or all of it where FP32 would ship
        assert c["allowance_pt"] == pytest.approx(5.0 if c["form"] == "fp32" else 5.0 - 0.5)
        if c["drop_pt"] is not None and c["verdict"] != ws.CHOSEN:
            assert (c["verdict"] == ws.WITHIN) == (c["drop_pt"] <= c["allowance_pt"])
    params = [curve[r]["params"] for r in ratios]
    assert params == sorted(params, reverse=True)
    trained = [c for c in curve.values() if c["val_accuracy"] is not None]
    for c in curve.values():  # the verdicts follow the rule, whatever the timings were
        if c["drop_pt"] is not None:
            assert c["drop_pt"] == pytest.approx(100 * (search["baseline_val_accuracy"] - c["val_accuracy"]), abs=1e-3)
        if c is chosen:
            continue
        if c["val_accuracy"] is not None:  # tried before the chosen one: at least as fast, and over its allowance
            assert c["verdict"] == ws.OVER and c["p50_ms"] <= chosen["p50_ms"]
        elif c["verdict"] == ws.NOT_TRIED:
            assert c["p50_ms"] >= chosen["p50_ms"]
        else:
            wider = float(c["verdict"].rsplit(" ", 1)[1])
            assert wider < c["ratio"] and curve[wider]["p50_ms"] <= c["p50_ms"] * (1 + ws.NOISE)
    if chosen["drop_pt"] > search["allowance_pt"]:  # none within: the most accurate distilled width goes on
        assert chosen["val_accuracy"] == max(c["val_accuracy"] for c in trained)
    prune = next(s for s in report["stages"] if s["name"] == "prune")["metrics"]
    # the prune stage ran at the chosen ratio: the width search's one-step candidate had the same parameter count
    assert prune["params_after"] == chosen["params"]
    # the stages take the search's students of that width instead of training them again (before they were reused,
    # retraining gave the very same validation accuracy: same pruning, schedule and seeds)
    distill = next(s for s in report["stages"] if s["name"] == "distill")["metrics"]
    assert prune["reused_from_width_search"] and distill["reused_from_width_search"]
    assert prune["val_accuracy"] == chosen["students"]["pruned"] and prune["loss_curve"]  # the search's curve
    assert distill["val_accuracy"] == chosen["students"]["distilled"]
    assert report["recipe"]["prune"]["ratio"] == search["chosen_ratio"]
    section = to_html(report).split("<h2>Width search</h2>")[1]
    svg = section[section.index("<svg"):section.index("</svg>") + len("</svg>")]
    assert len(ET.fromstring(svg).findall(".//{*}circle")) >= len(ratios) + 1  # every width and the unpruned model

    again = run(recipe, tmp_path)  # a rerun reuses the search and prunes at the same ratio
    cached = {s["name"]: s["cached"] for s in again["stages"]}
    assert cached["widths"] and cached["prune"] and again["width_search"] == search


def test_a_searched_student_is_handed_over_only_when_pruned_by_the_same_plan_at_the_recipe_ratio():
    from types import SimpleNamespace

    from torch import nn

    from compress.families.image.family import handed_student
    from compress.pruning.structured import PLAN_ATTR

    def pruned(plan):
        model = nn.Linear(2, 2)
        setattr(model, PLAN_ATTR, plan)
        return model

    def run(ratio):
        student = pruned({"version": 2, "history": [["fc", True, [0]]]})
        return SimpleNamespace(recipe=recipe_from_dict({"name": "h", "prune": {"ratio": ratio}}),
                               handoff={"widths": {"ratio": 0.5, "students": {"pruned": (student, [1.0])}}})

    same, other = {"version": 2, "history": [["fc", True, [0]]]}, {"version": 2, "history": [["fc", True, [1]]]}
    assert handed_student(run(0.25), "pruned", pruned(same)) is None  # another ratio
    assert handed_student(run(0.5), "pruned", pruned(other)) is None  # another pruning plan
    assert handed_student(run(0.5), "distilled", pruned(same)) is None  # not trained in the search
    r = run(0.5)
    model, curve = handed_student(r, "pruned", pruned(same))
    assert curve == [1.0] and handed_student(r, "pruned", pruned(same)) is None  # taken once
