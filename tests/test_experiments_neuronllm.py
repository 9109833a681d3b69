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
    MODES, Result, TaskEval, ablation, answer_ce, arms_for, avg_effect, bottom_share, ce_shifts, cell, claims, control_result,
    effect, rac, sig, table, task_eval,
)
from neuronloc.interventions import Arm, Competence, OptionEval
from neuronloc.metrics import bootstrap_ci
from neuronloc.scales import NeuronLLM

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

def test_rac_and_cross_fitted_effect_by_hand():
    assert rac([1, 1, 0, 0], [1, 0, 0, 0], "degrade") == pytest.approx(50.0)
    assert rac([1, 1, 0, 0], [1, 0, 0, 0], "enhance") == pytest.approx(-50.0)  # a Fail is negative
    assert rac([0.5, 0.5], [1, 1], "enhance") == pytest.approx(100.0)
    assert math.isnan(rac([0, 0], [1, 1], "enhance"))
    base = np.array([1, 1, 1, 1, 0, 0])
    # ratios 0, 0.5, 1: on even examples 0, 2, 4 ratio 0.5 is lowest, on odd 1, 3, 5 ratio 1.0
    sweep = np.array([[1, 1, 1, 1, 0, 0],
                      [0, 1, 0, 1, 0, 0],
                      [1, 0, 1, 0, 1, 0]], dtype=float)
    ev = TaskEval(base.astype(float), {("X", "degrade"): ((0.0, 0.5, 1.0), sweep)})
    rows = np.arange(6)
    # picked on the even half (ratio 0.5, Acc 0/3), tested on the odd: base 2/3, acc 2/3 -> RAC 0;
    # picked on the odd half (ratio 1.0, Acc 0/3), tested on the even: base 2/3, acc 3/3 -> RAC -50
    assert effect(ev, "X", "degrade", rows) == pytest.approx((0 - 50) / 2)
    assert effect(ev, "X", "degrade", rows, control="Good") == pytest.approx(100 * (4 / 6 - 3 / 6) / (4 / 6))
    assert effect(ev, "X", "degrade", rows, control="Bad") == pytest.approx(0.0)
    assert math.isnan(effect(ev, "X", "degrade", np.array([0, 2])))  # no odd half


def competence(acc, trivial=0.25, readout="pmi", n=100):
    return Competence(readout, n, round(acc * n), 0.25, 0.01, (acc - 0.1, acc + 0.1), trivial)


def task(n=40, seed=0, strong=True, seeds=3):
    """A competent task of n examples (half right unedited, A.1). strong: NeuronLLM's best
    ratio (0.5) turns every answer wrong (Deg) / right (Enh), every competitor does
    nothing but TN-enabled, which degrades 6 comprehended examples; weak: NeuronLLM's
    enhancer gets 8 examples wrong and TN's gets every example right."""
    rng = np.random.default_rng(seed)
    base = np.r_[np.ones(n // 2), np.zeros(n // 2)]
    arms = {}
    put = lambda name, mode, ratios, *accs: arms.__setitem__((name, mode), (tuple(ratios), np.stack(accs).astype(float)))
    hit = base.copy()
    hit[rng.choice(n // 2, 6, replace=False)] = 0
    for name in ("TN", "QRNCA", "KN", "ACT", "QRNCA-enabled"):
        for mode in MODES:
            put(name, mode, (1.0,), base)
    put("TN-enabled", "degrade", (1.0,), hit)
    put("TN-enabled", "enhance", (1.0,), base)
    if strong:
        put("NeuronLLM", "degrade", (0.0, 0.5, 1.0), base, np.zeros(n), base)
        put("NeuronLLM", "enhance", (0.0, 0.5, 1.0), base, np.ones(n), base)
    else:
        worse = base.copy()
        worse[:8] = 0
        put("NeuronLLM", "degrade", (0.0, 0.5, 1.0), base, base, base)
        put("NeuronLLM", "enhance", (0.0, 0.5, 1.0), worse, worse, worse)
        put("TN", "enhance", (1.0,), np.ones(n))
    for s in range(seeds):
        for mode in MODES:
            noisy = base.copy()
            noisy[rng.choice(n, 2, replace=False)] = 1 - noisy[rng.choice(n, 2, replace=False)]
            put(f"RANDOM-{s}", mode, (1.0,), noisy)
    return TaskEval(base, arms)


def budget_task(n=20):
    base = np.r_[np.ones(n // 2), np.zeros(n // 2)]
    arms = {}
    for k in (10, 100, 500):
        for mode in MODES:
            arms[f"NeuronLLM@{k}", mode] = ((0.0, 1.0), np.stack([np.zeros(n), base]) if mode == "degrade" else np.stack([base, base]))
            arms[f"TN@{k}", mode] = ((1.0,), (np.zeros(n) if k == 500 and mode == "degrade" else base)[None])
            arms[f"QRNCA@{k}", mode] = ((1.0,), base[None])
    return TaskEval(base, arms)


def result(evals, competent, shape=(30, 10), **kw):
    tasks = ["ner", "chunking", "sentiment", "commonsense"]
    comp = {t: {"pmi": competence(0.44 if t in competent else 0.2, 0.26 if t in competent else 0.36)} for t in tasks}
    neurons = {t: (ids(250, 251, 252, 200, 201), ids(255, 256, 257, 205, 206)) for t in competent}  # layers 25, 20 both
    args = dict(model="m", tasks=tasks, competent=competent, readout={t: "pmi" for t in tasks}, competence=comp, evals=evals,
                budget_task="commonsense", budgets=(10, 100, 500), budget_eval=budget_task(), shape=shape, neurons=neurons,
                common=(NONE, NONE), specific={}, k=5, timing=(2.0, 1.8, 2.2, [2.0] * 5))
    return Result(**(args | kw))


CFG = NeuronLLM(random_seeds=3)


def by_id(rows):
    return {c.id: c for c in rows}


def test_claims_one_competent_task_replicated_contradicted_and_na():
    rows = claims(result({"commonsense": task()}, ["commonsense"]), CFG, n_resamples=200)
    c = by_id(rows)
    assert [r.id for r in rows] == [f"NL-{i:02d}" for i in range(1, 39)]
    # NeuronLLM's best ratio wipes out / restores every answer; every competitor is near 0
    assert c["NL-01"].verdict == "replicated" and c["NL-01"].estimate > 80
    assert c["NL-01"].n == 40 and c["NL-01"].n_of == "questions" and "['commonsense']" in c["NL-01"].note
    assert c["NL-24"].verdict == "replicated"
    # NL-28: NeuronLLM's Deg RAC is 100 at every K, so no diminishing-returns gain: 0 [0, 0] < sesoi -> contradicted
    assert (c["NL-28"].estimate, c["NL-28"].ci, c["NL-28"].verdict) == (0.0, [0.0, 0.0], "contradicted")
    # NL-27: TN reaches NeuronLLM@10 only at K = 500: 50x in every resample
    assert (c["NL-27"].estimate, c["NL-27"].ci, c["NL-27"].verdict) == (50.0, [50.0, 50.0], "replicated")
    # one competent task: the cross-task claims are n/a; NL-23 holds by construction; other models n/a
    for id in ("NL-20", "NL-21", "NL-22", "NL-30", "NL-34", "NL-35", "NL-03", "NL-13", "NL-33", "NL-38"):
        assert c[id].verdict == "n/a", id
    assert c["NL-23"].verdict == "n/a" and c["NL-23"].flags == ["by construction"]
    # NL-19: the weakest task (0.2 vs trivial 0.36) decides: -16 pp, Clopper-Pearson interval minus the trivial answer
    assert c["NL-19"].estimate == pytest.approx(-16.0) and c["NL-19"].ci == pytest.approx([-26.0, -6.0])
    assert c["NL-19"].verdict == "contradicted"
    assert c["NL-36"].verdict == "replicated" and c["NL-36"].n == 5
    assert c["NL-10"].verdict == "replicated" and c["NL-10"].estimate == pytest.approx(100 * 100 / 352256)
    # layers: all neurons in layers 20 and 25 of 30; good and bad share the layers
    assert (c["NL-31"].estimate, c["NL-31"].verdict) == (0.0, "replicated")
    assert (c["NL-32"].estimate, c["NL-32"].ci, c["NL-32"].verdict) == (pytest.approx(1.0), pytest.approx([1.0, 1.0]), "replicated")


def test_claims_interval_is_the_hand_bootstrap():
    ev = task()
    c = by_id(claims(result({"commonsense": ev}, ["commonsense"]), CFG, n_resamples=300))["NL-24"]
    # NeuronLLM's cross-fitted Deg RAC is 100 in every resample (ratio 0.5 gives Acc 0 on any half),
    # so NL-24 = 100 - RAC(TN-enabled); the same draws as the notebook's: rows, then 3 seeds
    tn = ev.arms["TN-enabled", "degrade"][1][0]
    stat = lambda b, x, _seeds: 100 - 100 * (b.mean() - x.mean()) / b.mean()
    v, lo, hi = bootstrap_ci(stat, ev.base, tn, np.zeros((3, ev.n)), n_resamples=300, seed=0)
    assert c.estimate == pytest.approx(100 - 100 * 6 / 20) == pytest.approx(v)
    assert c.ci == pytest.approx([lo, hi]) and lo < hi


def test_claims_weak_method_is_contradicted_and_collapse_is_not_evidence():
    c = by_id(claims(result({"commonsense": task(strong=False)}, ["commonsense"]), CFG, n_resamples=200))
    # enhancer: NeuronLLM gets 8 of 20 right answers wrong (-40 %), TN gets every answer right (+100 %)
    assert c["NL-02"].estimate == pytest.approx(-140.0) and c["NL-02"].verdict == "contradicted"
    assert c["NL-07"].verdict == "contradicted"
    ev = task()
    ev.collapse.update({(n, m): True for n in ("NeuronLLM", "TN") for m in MODES})
    c = by_id(claims(result({"commonsense": ev}, ["commonsense"]), CFG, n_resamples=50))
    assert c["NL-07"].verdict == "n/a" and c["NL-07"].flags == ["collapse"]
    assert c["NL-01"].verdict == "replicated" and "collapse" in c["NL-01"].flags  # KN, ACT, ... did not collapse


def test_claims_without_competent_task_are_na_and_two_tasks_measure_the_cross_task_claims():
    rows = claims(result({}, []), CFG, n_resamples=50)
    measured_ids = {r.id for r in rows if r.verdict != "n/a"}
    assert measured_ids == {"NL-10", "NL-19", "NL-36"}  # arithmetic, competence, timing need no competent task
    a, b = task(seed=1), task(seed=2)
    for ev, own in ((a, "sentiment"), (b, "commonsense")):
        for src in ("sentiment", "commonsense"):
            for mode in MODES:
                hit = np.zeros(ev.n) if (src == own) == (mode == "degrade") else np.ones(ev.n)
                ev.arms[f"specific:{src}", mode] = ((0.0, 1.0), np.stack([hit, hit]))
        for mode in MODES:
            ev.arms["common", mode] = ((0.0, 1.0), np.stack([np.zeros(ev.n), np.zeros(ev.n)]) if mode == "degrade"
                                       else np.stack([np.ones(ev.n), np.ones(ev.n)]))
    r = result({"sentiment": a, "commonsense": b}, ["sentiment", "commonsense"], common=(ids(251,), ids(3,)),
               specific={"sentiment": (ids(250,), ids(255,)), "commonsense": (ids(200,), ids(205,))})
    c = by_id(claims(r, CFG, n_resamples=50))
    # own-task degrade: Acc 0 (RAC 100); other task: Acc 1 (RAC -100): diagonal 200
    assert (c["NL-21"].estimate, c["NL-21"].verdict) == (pytest.approx(200.0), "replicated")
    assert c["NL-30"].verdict == "replicated" and c["NL-30"].estimate == pytest.approx(100.0)
    assert c["NL-20"].verdict == "replicated"
    # common: layers 25 and 0; specific: layers 25, 25, 20, 20 -> 12.5 - 22.5
    assert c["NL-35"].estimate == pytest.approx(12.5 - 22.5)
    assert c["NL-34"].estimate == pytest.approx(0.5)


def test_task_eval_per_example_shares_and_collapse():
    from neuronloc.tasks import MCQuestion

    qs = [MCQuestion(stem=f"q{i}", options=("pos", "neg"), answer=i % 2, uid=f"u{i}") for i in range(4)]
    pred = lambda *p: OptionEval(torch.zeros(4, 2), torch.tensor(p), torch.tensor([0, 1, 0, 1]),
                                 torch.tensor(p) == torch.tensor([0, 1, 0, 1]), [q.uid for q in qs])
    base = pred(0, 1, 1, 1)  # 3 of 4 right, answers pos neg neg neg (modal share 0.75)
    arms = [Arm("X", "degrade", ids(1), NONE, 1, (1.0,)), Arm("Y", "degrade", ids(1), NONE, 1, (1.0,))]
    ev = task_eval(qs, base, arms, [[pred(0, 0, 0, 0)], [pred(1, 0, 1, 1)]])
    assert ev.base.tolist() == [1, 1, 0, 1]
    assert ev.arms["X", "degrade"][1].tolist() == [[1, 0, 1, 0]]
    assert ev.collapse == {("X", "degrade"): True, ("Y", "degrade"): False}  # X answers "pos" to all 4
    assert ev.shares == {("X", "degrade"): 1.0, ("Y", "degrade"): 0.75}
    assert cell({"fail": False, "rac": 12.345, "rcc": 0.5}, rcc=False) == "12"
    with pytest.raises(ValueError, match="order"):
        task_eval(qs[::-1], base, arms, [[pred(0, 0, 0, 0)], [pred(1, 0, 1, 1)]])


def test_conclusions_state_the_claims_numbers():
    from neuronloc.experiments.neuronllm import conclusions

    r = result({"commonsense": task(strong=False)}, ["commonsense"])
    rows = claims(r, CFG, n_resamples=100)
    text = conclusions(rows, r)
    for c in rows:
        if c.verdict in ("replicated", "contradicted", "inconclusive") and c.id != "NL-36":
            assert f"{c.id} {sig(c.estimate)}" in text, c.id
            if c.ci[0] is not None:
                assert f"{c.id} {sig(c.estimate)} [{sig(c.ci[0])}, {sig(c.ci[1])}]" in text, c.id
    assert "NL-36 " not in text
    n01 = next(c for c in rows if c.id == "NL-01")
    assert f"{sig(n01.estimate)} pp [{sig(n01.ci[0])}, {sig(n01.ci[1])}], half-width {sig((n01.ci[1] - n01.ci[0]) / 2)} pp" in text
    counts = {v: sum(c.verdict == v and c.id != "NL-36" for c in rows) for v in ("replicated", "contradicted", "inconclusive", "n/a")}
    assert ", ".join(f"{v} {k}" for v, k in counts.items()) in text
    # weak: the enhancer gets 8 of 20 right examples wrong at every ratio -> Acc 0.3 < 0.5 at 3 of 3 ratios
    assert "lowers Acc at 3 of 3 good:bad ratios (unedited Acc 0.5, enhanced 0.3 to 0.3)" in text
    assert "commonsense 40" in text and "ner, chunking, sentiment are left out" in text


def test_protocol_names_the_competent_tasks_sizes_and_main_half_width():
    from neuronloc.claims import protocol_line
    from neuronloc.experiments.neuronllm import protocol

    r = result({"commonsense": task(strong=False)}, ["commonsense"])
    rows = claims(r, CFG, n_resamples=100)
    n01 = next(c for c in rows if c.id == "NL-01")
    line = protocol_line(protocol(r, rows, CFG))
    assert line.startswith("tasks: ner, chunking, sentiment, commonsense; competent (decide the claims): commonsense; "
                           "read-out: commonsense pmi; evaluation questions: commonsense 40; ")
    assert f"K: 5; budgets: 10, 100, 500; NL-01 half-width: {sig((n01.ci[1] - n01.ci[0]) / 2)} pp (paper's margin " in line
    assert "NL-01" not in protocol_line(protocol(r, [c for c in rows if c.id != "NL-01"], CFG))


def test_intervention_rows_add_the_collapse_share_per_ratio():
    from neuronloc.experiments.neuronllm import intervention_rows
    from neuronloc.tasks import MCQuestion

    qs = [MCQuestion(stem=f"q{i}", options=("pos", "neg"), answer=i % 2, uid=f"u{i}") for i in range(4)]
    pred = lambda *p: OptionEval(torch.tensor([[0.6, 0.4] if x == 0 else [0.4, 0.6] for x in p]), torch.tensor(p),
                                 torch.tensor([0, 1, 0, 1]), torch.tensor(p) == torch.tensor([0, 1, 0, 1]), [q.uid for q in qs])
    arm = Arm("X", "degrade", ids(1, 2), ids(3, 4), 2, (0.0, 1.0))
    rows = intervention_rows(qs, pred(0, 1, 1, 1), [arm], [[pred(0, 0, 0, 0), pred(1, 1, 0, 1)]], n_resamples=20, task="t")
    assert [(r["ratio"], r["collapse_share"], r["collapse"]) for r in rows] == [(0.0, 1.0, True), (1.0, 0.75, False)]
    assert all(r["task"] == "t" for r in rows)
