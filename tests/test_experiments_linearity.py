"""Notebook 04's glue (`experiments.linearity`) against hand-worked examples: the round robin of
factual prompts over relations (fake data and a fake answer check, so the expected list is
written out by hand), the linear-range cut of a sweep, estimators at the sampled neurons."""
from __future__ import annotations

import math

import pytest
import torch

from neuronloc import neg
from neuronloc.experiments import linearity
from neuronloc.experiments.linearity import at_sampled, factual_prompts, on_linear
from neuronloc.tasks.loaders import Example


def _facts(relation: str, facts: list[str], patterns: list[int]) -> list[Example]:
    """Every fact in every pattern, as `tasks.loaders.pararel` returns them (facts x patterns)."""
    return [Example(f"{relation} {fact} p{j}", f" {fact.upper()}", f"{relation}/{fact}/p{j}", {"pattern": j, "fact": fact})
            for fact in facts for j in patterns]


def test_factual_prompts_one_pattern_per_fact_round_robin(monkeypatch):
    data = {"pararel/A": _facts("A", ["a1", "a2", "a3", "a4"], [5, 2, 9]),  # lowest pattern 2 (not the first listed)
            "pararel/B": _facts("B", ["b1", "b2"], [0, 3])}
    loads = []

    def fake_load(name, n=None, seed=0):
        loads.append((name, n, seed))
        return data[name]

    rejected = {"a2", "b1"}  # the model gets these wrong
    asked = []

    def fake_answered(lm, example):
        asked.append(example.uid)
        return example.meta["fact"] not in rejected

    monkeypatch.setattr(linearity, "load_examples", fake_load)
    monkeypatch.setattr(neg, "answered", fake_answered)
    # round robin on pattern 2 of A and pattern 0 of B: a1 b1 | a2 b2 | a3 | a4; b1 and a2 rejected
    kept = factual_prompts(None, ["pararel/A", "pararel/B"], n=10, scan=7, seed=3)
    assert [e.uid for e in kept] == ["A/a1/p2", "B/b2/p0", "A/a3/p2", "A/a4/p2"]
    assert loads == [("pararel/A", 7, 3), ("pararel/B", 7, 3)]
    asked.clear()
    kept = factual_prompts(None, ["pararel/A", "pararel/B"], n=2, scan=7, seed=3)
    assert [e.uid for e in kept] == ["A/a1/p2", "B/b2/p0"]
    assert asked == ["A/a1/p2", "B/b1/p0", "A/a2/p2", "B/b2/p0"]  # the model is not asked once n are kept


def test_on_linear_cuts_either_grid_to_the_range():
    full, linear = neg.grid(3, 1), neg.grid(2, 1)  # [-3 .. 3] (7 points), [-2 .. 2] (5 points)
    on_full = torch.arange(14.0).reshape(2, 7)
    on_lin = torch.arange(10.0).reshape(2, 5)
    assert on_linear(on_full, full, linear, 1.0).tolist() == [[2, 3, 4], [9, 10, 11]]  # Δ = -1, 0, 1
    assert on_linear(on_lin, full, linear, 1.0).tolist() == [[1, 2, 3], [6, 7, 8]]
    assert on_linear(on_lin, full, linear, 2.0).tolist() == on_lin.tolist()
    with pytest.raises(ValueError, match="fewer than 2"):
        on_linear(on_lin, full, linear, 0.5)


def test_at_sampled_picks_the_sampled_neurons_in_study_order():
    grads = [torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]), torch.tensor([[10.0, 11.0, 12.0], [13.0, 14.0, 15.0]])]
    from types import SimpleNamespace as Study  # the fields at_sampled reads of a neg.Study
    studies = [Study(neurgrad=grads[0], lpi=torch.tensor([-1.0, -2.0]), neurons=torch.tensor([4, 0])),  # (1, 1), (0, 0)
               Study(neurgrad=grads[1], lpi=torch.tensor([-3.0]), neurons=torch.tensor([5]))]  # (1, 2)
    got = at_sampled(studies, "neurgrad")
    assert got.dtype == torch.float64 and got.tolist() == [4.0, 0.0, 15.0]
    assert at_sampled(studies, "lpi").tolist() == [-1.0, -2.0, -3.0]  # already at the sampled neurons


# ---------------------------------------------------------------- claims (NG-01 ... NG-14, NG-30 ... NG-33)

def _res(n_prompts=6, m=4, seed=0):
    """Hand-made `collect` output: m pairs per prompt, NeurGrad = the truth, CG = truth with a random sign,
    IG = half the truth plus noise, LPI noise; prompt p's neurons are all linear when p is even."""
    import numpy as np

    rng = np.random.default_rng(seed)
    prompt = np.repeat(np.arange(n_prompts), m)
    truth = rng.normal(size=n_prompts * m) * 1e-3
    cfg = type("Cfg", (), {"ig_steps": 20, "window": 64, "timing_rounds": 3, "timing_ig_rounds": 1, "timing_ig_path": "reference"})()
    res = {
        "prompt": prompt, "truth": truth, "linear": (prompt % 2 == 0),
        "est": {"NeurGrad": truth.copy(), "CG": truth * rng.choice([-1, 1], size=truth.size),
                "IG": truth / 2 + rng.normal(size=truth.size) * 1e-3, "LPI": rng.normal(size=truth.size)},
        "fig2_r": np.column_stack([np.full(n_prompts, 0.99), np.linspace(0.8, 0.9, n_prompts)]), "limits": [0.2, 10.0],
        "top_linear": np.ones((n_prompts, 3), bool), "top_layer": np.tile([0, 1, 2], (n_prompts, 1)), "n_layers": 3,
        "n_neurons": 3 * 100,
        "top_k": {"neurgrad": np.full((n_prompts, 2, 2), 0.2), "grad": np.full((n_prompts, 2, 2), 0.1),
                  "ig": np.full((n_prompts, 2, 2), 0.15)}, "top_k_sizes": [1, 4],
        "sizes": [1, 4, 16], "ranges": [0.5, 2.0], "multi_range": 0.5,
        "multi_r": {0.5: np.tile([0.99, 0.9, 0.8], (n_prompts, 1)), 2.0: np.tile([0.9, 0.7, 0.3], (n_prompts, 1))},
        "multi_shift": {0.5: np.tile([0.01, 0.02, 0.05], (n_prompts, 1)), 2.0: np.tile([0.1, 0.2, 0.4], (n_prompts, 1))},
        "top10": np.full(n_prompts, 0.3), "within10": np.full(n_prompts, 0.999),
        "neg_sum": rng.normal(size=n_prompts) * 1e-3, "neg_abs_sum": np.full(n_prompts, 1.0),
        "layer_mean": np.array([1.0, 2.0, 3.0]), "layer_var": np.array([1.0, 4.5, 9.0]),
    }
    return res, cfg


def test_claims_rows_intervals_over_prompts_and_verdicts():
    import numpy as np

    from neuronloc import metrics
    from neuronloc.claims import decide

    res, cfg = _res()
    rows = {c.id: c for c in linearity.claims(res, cfg, timing={"ig_neurgrad": (30.0, 25.0, 35.0, [[30.0] * 4] * 5),
                                                                  "neurgrad_cg": (1.0, 0.9, 1.1, [1.0] * 5),
                                                                  "fast_ig_neurgrad": (9.0, 8.5, 9.5, [9.0] * 4)},
                                              n_resamples=500, seed=1)}
    assert sorted(rows) == sorted({f"NG-{i:02d}" for i in (*range(1, 15), 30, 31, 32, 33)})
    for c in rows.values():
        assert c.verdict == "n/a" or c.verdict == decide(c.rule, c.as_estimate())
    # NG-03: the pairs of one prompt move together, so the interval is that of the 6 per-prompt shares
    per_prompt = np.array([1.0, 0.0] * 3)
    _, lo, hi = metrics.unit_mean_ci(per_prompt, n_resamples=500, seed=1)
    assert rows["NG-03"].estimate == 0.5 and rows["NG-03"].ci == pytest.approx([lo, hi], abs=1e-12)
    assert (rows["NG-03"].n, rows["NG-03"].n_of) == (6, "prompts")
    assert hi - lo > 0.4  # 24 pairs resampled one by one would give about half this width
    assert rows["NG-03"].verdict == "inconclusive"  # 0.5 is the threshold itself
    # NG-06: NeurGrad is the truth here -> every sign agrees, a zero-width interval at 1 -> replicated
    assert rows["NG-06"].estimate == 1.0 and rows["NG-06"].ci == [1.0, 1.0] and rows["NG-06"].verdict == "replicated"
    # NG-07: r(NeurGrad) = 1 beats the best competitor by 1 - max r, by hand
    r = lambda a: np.corrcoef(a, res["truth"])[0, 1]
    best = max(r(res["est"][k]) for k in ("CG", "IG", "LPI"))
    assert rows["NG-07"].estimate == pytest.approx(1 - best)
    # NG-09: from the interleaved repetitions, not the prompts
    assert (rows["NG-09"].estimate, rows["NG-09"].ci, rows["NG-09"].n, rows["NG-09"].n_of) == (30.0, [25.0, 35.0], 5, "processes")
    assert rows["NG-09"].verdict == "replicated"  # the fast IG's 9.0 is a sensitivity row: it decides nothing
    assert "one layer at a time" in rows["NG-09"].note and "fast IG the ratio is 9.0 [8.5, 9.5] (4 repetitions" in rows["NG-09"].note
    # NG-10: NeurGrad 0.2 against CG 0.1 and IG 0.15 in every cell -> 0.05, zero width
    assert rows["NG-10"].estimate == pytest.approx(0.05) and rows["NG-10"].verdict == "replicated"
    # NG-13: r at N = 16 on [0, 0.5] is 0.8 for every prompt -> above 0.7; NG-14: 0.3 on [0, 2] -> contradicted (< 0.5)
    assert rows["NG-13"].estimate == pytest.approx(0.8) and rows["NG-13"].verdict == "replicated"
    assert rows["NG-14"].estimate == pytest.approx(0.3) and rows["NG-14"].verdict == "contradicted"
    # NG-30: linear top neurons one per layer and 3 per prompt -> PG = LG = 1
    assert rows["NG-30"].estimate == 1.0 and rows["NG-30"].verdict == "replicated"
    # NG-12 (0.3 < 0.5) replicated; NG-33 n/a by construction; NG-02, NG-11 n/a
    assert rows["NG-12"].verdict == "replicated"
    assert rows["NG-33"].verdict == "n/a" and rows["NG-33"].flags == ["by construction"]
    assert rows["NG-02"].verdict == rows["NG-11"].verdict == "n/a"
    # NG-01: mean over prompts at ±10 (0.8 .. 0.9): 0.85, interval over the 6 prompts
    assert rows["NG-01"].estimate == pytest.approx(0.85) and rows["NG-01"].n == 6


def test_claims_timing_contradicted_and_generality_by_hand():
    import numpy as np

    res, cfg = _res()
    res["top_layer"] = np.tile([0, 0, 1], (6, 1))  # layer 2 holds none: coverage 2/3
    rows = {c.id: c for c in linearity.claims(res, cfg, timing={"ig_neurgrad": (3.0, 2.5, 3.5, [[3.0] * 4] * 5),
                                                                  "neurgrad_cg": (1.0, 0.9, 1.1, [1.0] * 5)}, n_resamples=200)}
    assert rows["NG-09"].verdict == "contradicted"  # 3.5 < 10 + 55
    assert (rows["NG-09"].n, rows["NG-09"].n_of) == (5, "processes")
    # LG by hand: counts per layer (12, 6, 0) of 18: coverage 2/3, var = 24, maxVar = 18^2 * 2 / 9 = 72 -> 2/3 * (1 - 1/3)
    assert rows["NG-30"].estimate == pytest.approx(2 / 3 * (1 - 24 / 72))
    assert rows["NG-30"].verdict == "contradicted"
    assert linearity.claims(res, cfg, timing=None, n_resamples=50)[8].verdict == "n/a"  # NG-09 untimed


def test_timing_ratio_pairs_each_repetition_on_the_next_prompt(monkeypatch):
    import neuronloc.attribution as attribution

    calls = []
    monkeypatch.setattr(attribution, "attribute", lambda method, lm, prompt, **kw: calls.append((method, prompt, kw)))
    mean, lo, hi, ratios = linearity.timing_ratio(None, ["p0", "p1", "p2"], "ig", "neurgrad", repetitions=5,
                                                  a_kwargs={"steps": 20})
    assert len(ratios) == 5 and lo <= mean <= hi
    # warm-up pair on p0, then p1, p2, p0, p1, p2; a and b of one pair on the same prompt
    assert [c[:2] for c in calls] == [(m, p) for p in ["p0", "p1", "p2", "p0", "p1", "p2"] for m in ("ig", "neurgrad")]
    assert all(kw == ({"steps": 20} if m == "ig" else {}) for m, _, kw in calls)
    calls.clear()  # two rounds per repetition: each prompt timed twice in a row, a and b interleaved
    linearity.timing_ratio(None, ["p0", "p1", "p2"], "ig", "neurgrad", repetitions=3, rounds=2)
    assert [c[1] for c in calls[::2]] == ["p0", "p1", "p1", "p2", "p2", "p0", "p0"]
    assert [c[0] for c in calls] == ["ig", "neurgrad"] * 7
    calls.clear()  # a cheaper warm-up call of a: its kwargs replaced there only
    linearity.timing_ratio(None, ["p0", "p1"], "ig", "neurgrad", repetitions=2, a_kwargs={"steps": 20, "path": "reference"},
                           a_warmup={"steps": 2, "layers": [0]})
    assert [kw for m, _, kw in calls if m == "ig"] == [{"steps": 2, "path": "reference", "layers": [0]},
                                                       {"steps": 20, "path": "reference"}, {"steps": 20, "path": "reference"}]


def test_t_mean_ci_is_students_interval_by_hand():
    from neuronloc.metrics import t_mean_ci

    x = [9.5, 9.8, 10.5, 10.7, 10.1]
    mean = sum(x) / 5
    sd = (sum((v - mean) ** 2 for v in x) / 4) ** 0.5
    half = 2.7764451051977987 * sd / 5 ** 0.5  # t(0.975, 4)
    m, lo, hi = t_mean_ci(x)
    assert (m, lo, hi) == pytest.approx((mean, mean - half, mean + half), rel=1e-12)
    assert t_mean_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)  # zero width
    assert math.isnan(t_mean_ci([3.0])[1]) and math.isnan(t_mean_ci([])[0])


def _fake_child(model, threads, args, kwargs):  # module level: spawned processes import it
    prompts, a, b, repetitions, seed = args
    return [10.0 + seed + 0.1 * r for r in range(repetitions)]


def test_process_timing_ratio_runs_fresh_processes_and_takes_the_interval_over_them():
    """Each process gets its own seed (seed + p) and returns its repetitions' ratios; the estimate
    is the mean of the process means, the interval Student's t over those means."""
    from neuronloc.experiments.linearity import process_timing_ratio
    from neuronloc.metrics import t_mean_ci

    mean, lo, hi, per = process_timing_ratio("unused", [], "ig", "neurgrad", processes=3, repetitions=2, seed=1,
                                             child=_fake_child)
    assert per == [[11.0, 11.1], [12.0, 12.1], [13.0, 13.1]]
    assert (mean, lo, hi) == pytest.approx(t_mean_ci([11.05, 12.05, 13.05]))
    assert lo < 12.05 < hi
