"""Notebook 06's arms, tables and claim rows (neuronloc.experiments.neuronllm) against
hand-worked examples: arm lists and ratios written out by hand, table cells and averages
of small frames worked out by hand, layer shares recounted with numpy, cross-entropies
from math.log of hand-made option probabilities."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from neuronloc.experiments.neuronllm import (
    ablation, answer_ce, arms_for, avg_effect, bottom_share, ce_shifts, cell, claim_row, control_result, sig, table,
)
from neuronloc.interventions import Arm, OptionEval

ids = lambda *x: torch.tensor(x, dtype=torch.long)
NONE = ids()


def option_eval(p_answer: list[float]) -> OptionEval:
    """Two-option questions whose answer is option 0 with probability p (right iff p > 0.5);
    two proxies per example (uids u0 u0 u1 u1 ...)."""
    probs = torch.tensor([[p, 1 - p] for p in p_answer])
    answer = torch.zeros(len(p_answer), dtype=torch.long)
    pred = probs.argmax(-1)
    return OptionEval(probs, pred, answer, pred == answer, [f"u{i // 2}" for i in range(len(p_answer))])


# ---------------------------------------------------------------- arms

def test_arms_for_lists_every_arm_in_order():
    sets = {"NeuronLLM": (ids(1, 2, 3), ids(7, 8)), "TN": (ids(4, 5), NONE), "QRNCA": (ids(6,), NONE)}
    specific = {"a": (ids(1,), ids(2,)), "b": (ids(3,), ids(4,))}
    arms = arms_for(sets, (ids(1,), ids(8,)), specific, 2, (0.0, 0.5, 1.0), (0.0, 1.0), budgets=(1, 3))
    per_mode = ["NeuronLLM", "TN", "QRNCA", "common", "specific:a", "specific:b",
                "NeuronLLM@1", "TN@1", "QRNCA@1", "NeuronLLM@3", "TN@3", "QRNCA@3"]
    assert [a.name for a in arms] == per_mode * 2
    assert [a.mode for a in arms] == ["degrade"] * 12 + ["enhance"] * 12
    assert [a.budget for a in arms[:12]] == [2] * 6 + [1] * 3 + [3] * 3
    # a method with bad neurons sweeps its ratios; a good-only one has 100 % good
    assert [a.ratios for a in arms[:12]] == [(0.0, 0.5, 1.0), (1.0,), (1.0,)] + [(0.0, 1.0)] * 4 + [(1.0,), (1.0,),
                                                                                                   (0.0, 1.0), (1.0,), (1.0,)]
    assert arms[3].good.tolist() == [1] and arms[3].bad.tolist() == [8]
    assert arms[5].good.tolist() == [3] and arms[5].bad.tolist() == [4]
    assert arms[9].good.tolist() == [1, 2, 3] and arms[9].bad.tolist() == [7, 8]
    without = arms_for(sets, (ids(1,), ids(8,)), specific, 2, (0.0, 0.5, 1.0), (0.0, 1.0))
    assert [a.name for a in without] == per_mode[:6] * 2


# ---------------------------------------------------------------- tables

def test_sig_and_cell_by_hand():
    assert [sig(v) for v in (0.12345, 123.4, -0.0567, 50.0, 0.0)] == ["0.12", "120", "-0.057", "50", "0"]
    assert sig(float("nan")) == "nan" and sig(np.inf) == "nan"
    assert cell({"fail": False, "rac": 12.345, "rcc": 0.5}) == "12/0.5"
    assert cell({"fail": True, "rac": 12.345, "rcc": 0.5}) == "Fail"


def best_frame() -> pd.DataFrame:
    cols = ["family", "mode", "task", "fail", "rac", "rcc", "effect_acc", "effect_com"]
    return pd.DataFrame([
        ("NeuronLLM", "degrade", "a", False, 51.4, 66.6, 51.4, 66.6),
        ("NeuronLLM", "degrade", "b", True, 5.0, 3.0, -5.0, 3.0),
        ("NeuronLLM", "enhance", "a", False, 16.7, 31.0, 16.7, 31.0),
        ("RANDOM", "degrade", "a", False, 2.0, 4.0, 2.0, 4.0),
        ("RANDOM", "degrade", "a", True, 1.0, 3.0, -1.0, 3.0),
        ("RANDOM", "degrade", "b", False, 1.5, 2.5, 1.5, 2.5),
    ], columns=cols)


def test_avg_effect_by_hand():
    frame = best_frame()
    assert avg_effect(frame, "NeuronLLM", "degrade", ["a", "b"]) == pytest.approx(((51.4 - 5) / 2, (66.6 + 3) / 2))
    assert avg_effect(frame, "NeuronLLM", "degrade", ["a"]) == pytest.approx((51.4, 66.6))
    assert avg_effect(frame, "RANDOM", "degrade", ["a"]) == pytest.approx(((2 - 1) / 2, (4 + 3) / 2))
    for method, mode, tasks in (("KN", "degrade", ["a"]), ("NeuronLLM", "enhance", ["b"]), ("NeuronLLM", "degrade", [])):
        assert all(math.isnan(v) for v in avg_effect(frame, method, mode, tasks))


def test_table_cells_and_averages_by_hand():
    out = table(best_frame(), ["NeuronLLM", "RANDOM"], ["a", "b"], averaged=["a"])
    assert list(out.index) == ["NeuronLLM", "RANDOM"]
    assert list(out.columns) == [(op, t) for op in ("Deg", "Enh") for t in ("a", "b", "Avg")]
    assert out.loc["NeuronLLM"].tolist() == ["51/67", "Fail", "51/67", "17/31", "nan/nan (mean of 0)", "17/31"]
    # RANDOM on a: two seeds, shown as their mean signed effect; Avg only over task a
    assert out.loc["RANDOM"].tolist() == ["0.5/3.5 (mean of 2)", "1.5/2.5", "0.5/3.5",
                                          "nan/nan (mean of 0)", "nan/nan (mean of 0)", "nan/nan"]


def test_ablation_picks_good_bad_and_best_ratio():
    def row(mode, ratio, acc, best):
        return {"task": "a", "method": "NeuronLLM", "mode": mode, "ratio": ratio, "rac": acc, "rcc": acc + 1,
                "fail": acc < 0, "effect_acc": acc, "effect_com": acc + 1, "best": best}

    frame = pd.DataFrame([row("degrade", 0.0, 10.0, False), row("degrade", 0.5, 30.0, True), row("degrade", 1.0, 20.0, False),
                          row("enhance", 0.0, -5.0, False), row("enhance", 0.5, 1.0, False), row("enhance", 1.0, 4.0, True)])
    out = ablation(frame)
    assert out[["mode", "control", "ratio", "effect_acc"]].values.tolist() == [
        ["degrade", "Good", 1.0, 20.0], ["degrade", "Bad", 0.0, 10.0], ["degrade", "Both", 0.5, 30.0],
        ["enhance", "Good", 1.0, 4.0], ["enhance", "Bad", 0.0, -5.0], ["enhance", "Both", 1.0, 4.0]]
    assert out["rcc"].tolist() == [21.0, 11.0, 31.0, 5.0, -4.0, 5.0]
    assert out["fail"].tolist() == [False, False, False, False, True, False]
    assert set(out["task"]) == {"a"} and set(out["method"]) == {"NeuronLLM"}


# ---------------------------------------------------------------- layers

def test_bottom_share_recounted_with_numpy():
    neurons = [0, 5, 9, 23]  # n_inner 4: layers 0, 1, 2, 5
    for n_layers in (6, 7, 8):  # bottom third: layers 0-1, 0-1, 0-1 (n_layers // 3 = 2)
        expected = np.mean(np.array(neurons) // 4 < n_layers // 3)
        assert bottom_share(ids(*neurons), (n_layers, 4)) == pytest.approx(expected) == pytest.approx(0.5)
    assert bottom_share(ids(0, 5, 11), (9, 4)) == 1.0  # layers 0, 1, 2: all in the bottom third 0-2
    assert bottom_share(ids(0, 13, 14), (9, 4)) == pytest.approx(1 / 3)  # layers 0, 3, 3
    mask = torch.zeros(6, 4, dtype=torch.bool)
    mask[0, 0] = mask[3, 1] = mask[4, 2] = True
    assert bottom_share(mask, (6, 4)) == pytest.approx(1 / 3)
    assert math.isnan(bottom_share(NONE, (6, 4)))


# ---------------------------------------------------------------- Fig. 10

def test_answer_ce_is_minus_log_p_of_the_answer():
    result = OptionEval(torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.9, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 1, 1]),
                        torch.tensor([0, 1, 0]), torch.tensor([True, True, False]), ["u0", "u0", "u0"])
    assert answer_ce(result).tolist() == pytest.approx([math.log(2), -math.log(0.9), -math.log(1e-12)], rel=1e-6)


@pytest.fixture
def swept():
    """A NeuronLLM arm at ratios 0, 0.5, 1 and a good-only TN arm, both modes, with read-outs
    whose accuracies put the best ratio at 0.5 (degrade: lowest Acc, enhance: highest)."""
    good, bad = ids(1, 2), ids(3, 4)
    arms = [Arm("NeuronLLM", "degrade", good, bad, 2, (0.0, 0.5, 1.0)), Arm("TN", "degrade", good, NONE, 2, (1.0,)),
            Arm("NeuronLLM", "enhance", good, bad, 2, (0.0, 0.5, 1.0)), Arm("TN", "enhance", good, NONE, 2, (1.0,))]
    p = {"base": [.6, .6, .4, .4],
         "deg": [[.9, .9, .2, .2], [.3, .3, .3, .6], [.9, .6, .7, .2]],  # Acc 0.5, 0.25, 0.75
         "tn_deg": [[.4, .4, .4, .4]],
         "enh": [[.9, .2, .2, .2], [.9, .9, .9, .9], [.6, .6, .6, .2]],  # Acc 0.25, 1, 0.75
         "tn_enh": [[.8, .8, .8, .8]]}
    results = [[option_eval(x) for x in p[k]] for k in ("deg", "tn_deg", "enh", "tn_enh")]
    return option_eval(p["base"]), arms, results, p


def test_control_result_picks_the_ratio_of_each_control(swept):
    base, arms, results, _ = swept
    assert control_result(base, arms, results, "NeuronLLM", "degrade", "Both") is results[0][1]
    assert control_result(base, arms, results, "NeuronLLM", "degrade", "Good") is results[0][2]
    assert control_result(base, arms, results, "NeuronLLM", "degrade", "Bad") is results[0][0]
    assert control_result(base, arms, results, "NeuronLLM", "enhance", "Both") is results[2][1]
    assert control_result(base, arms, results, "TN", "enhance", "Good") is results[3][0]


def test_ce_shifts_by_hand(swept):
    base, arms, results, p = swept
    controls = (("TN", "TN", "Good"), ("Good", "NeuronLLM", "Good"), ("Bad", "NeuronLLM", "Bad"), ("Both", "NeuronLLM", "Both"))
    out = ce_shifts(base, arms, results, controls)
    order = ["original", "TN", "Good", "Bad", "Both"]
    assert out["control"].tolist() == [c for c in order for _ in range(4)] * 2
    assert out["mode"].tolist() == ["degrade"] * 20 + ["enhance"] * 20
    expected = {"degrade": [p["base"], p["tn_deg"][0], p["deg"][2], p["deg"][0], p["deg"][1]],
                "enhance": [p["base"], p["tn_enh"][0], p["enh"][2], p["enh"][0], p["enh"][1]]}
    ce = [-math.log(v) for mode in ("degrade", "enhance") for probs in expected[mode] for v in probs]
    assert out["ce"].tolist() == pytest.approx(ce, rel=1e-6)


# ---------------------------------------------------------------- claims

def test_claim_row_verdicts_and_na_reasons():
    kw = dict(competent=["a"], no_task="at chance")
    c = claim_row("NL-01", "x beats y", "51.4", np.float64(2.5), "pp", np.bool_(True), "note", "fig.png", **kw)
    assert (c.id, c.claim, c.paper_value, c.ours, c.unit, c.verdict, c.note, c.figure) == \
        ("NL-01", "x beats y", "51.4", 2.5, "pp", "replicated", "note", "fig.png")
    assert claim_row("NL-01", "x", "p", 2, "pp", False, **kw).verdict == "not replicated"
    c = claim_row("NL-01", "x", "p", float("nan"), "pp", False, **kw)
    assert (c.verdict, c.ours, c.note) == ("n/a", None, "no number: the comparison is undefined on this run")
    assert claim_row("NL-01", "x", "p", None, "pp", False, "Deg 1/2", **kw).note == "no number: Deg 1/2"
    c = claim_row("NL-21", "x", "p", 0.5, "share", True, need=2, **kw)
    assert (c.verdict, c.ours, c.unit, c.note) == ("n/a", 0.5, "share", "needs 2 tasks the model does, it does 1 (['a'])")
    c = claim_row("NL-01", "x", "p", float("nan"), "pp", True, competent=[], no_task="at chance")
    assert (c.verdict, c.ours, c.unit, c.note) == ("n/a", None, "", "needs 1 task(s) the model does; at chance")
