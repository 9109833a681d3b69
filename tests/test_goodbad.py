"""NeuronLLM good/bad-neuron experiments: proxies read alike, arms swept in one pass,
read-out choice from stored competences, common / task-specific neurons, layer counts."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from neuronloc.interventions import (
    Arm, Competence, best_ratio, degrader, enhancer, evaluate_conditions, evaluate_options, pick_readout,
    read_competence, sweep_arms, sweep_ratios, write_competence,
)
from neuronloc.localization.methods import question_scores
from neuronloc.neurons import common, layer_counts, refill
from neuronloc.store import Store
from neuronloc.tasks import MCQuestion, Task, qatt, read_alike


@pytest.fixture(scope="module")
def proxies():
    """9 QATT proxies of 3 examples."""
    base = [MCQuestion(f"what is {i}{'x' * 2 * i}?", ("red", "green", "blue", "gray"), i % 4) for i in range(3)]
    return qatt(Task("toy", base)).questions


def test_read_alike_merges_text_readout_proxies_only(proxies):
    rep, perm = read_alike(proxies, "cloze")
    assert rep == [0, 0, 0, 3, 3, 3, 6, 6, 6]
    for i, q in enumerate(proxies):  # option j of question i is option perm[i][j] of its representative
        assert [proxies[rep[i]].options[k] for k in perm[i]] == list(q.options)
    assert read_alike(proxies, "letter")[0] == list(range(9))  # letters list the options: proxies differ
    other = [replace(proxies[1], answer=(proxies[1].answer + 1) % 4)]  # another answer: not the same question
    assert read_alike([proxies[0]] + other, "cloze")[0] == [0, 1]


@pytest.mark.parametrize("readout", ["cloze", "pmi"])
def test_merged_evaluation_equals_running_every_proxy(tiny, proxies, readout):
    site = tiny.site()
    conditions = [[], degrader([1, 50], [70], site), enhancer([3], [100, 5], site)]
    merged = evaluate_conditions(tiny, proxies, conditions, site, readout=readout)
    each = evaluate_conditions(tiny, proxies, conditions, site, readout=readout, merge=False)
    for a, b in zip(merged, each):
        torch.testing.assert_close(a.probs, b.probs, rtol=1e-5, atol=1e-6)
        assert a.correct.tolist() == b.correct.tolist()


def test_merged_scores_equal_scoring_every_proxy(tiny, proxies):
    merged = question_scores(tiny, proxies[:3], "ig", "prob_margin", progress=False, steps=2, readout="cloze")
    for i in range(3):
        from neuronloc.attribution import attribute
        own = attribute("ig", tiny, proxies[i], target="prob_margin", steps=2, readout="cloze").scores
        torch.testing.assert_close(merged[i], own, rtol=1e-4, atol=1e-7)


def test_sweep_arms_matches_sweep_ratios_and_resumes(tiny, proxies, tmp_path):
    site = tiny.site()
    good, bad = torch.arange(0, 40, 3), torch.arange(60, 100, 3)
    arms = [Arm("x", "degrade", good, bad, 6), Arm("y", "enhance", good, bad, 4, ratios=(0.0, 1.0)),
            Arm("orig", "enhance", good, torch.empty(0, dtype=torch.long), 4, ratios=(1.0,))]
    store = Store(tmp_path)
    base, res = sweep_arms(tiny, proxies, arms, site, store=store, progress=False, examples_per_chunk=2)
    ref = sweep_ratios(tiny, proxies, good, bad, 6, "degrade", site, progress=False)
    assert base.acc == ref["base"]["acc"] and base.com == ref["base"]["com"]
    assert [r.acc for r in res[0]] == [row["acc"] for row in ref["rows"]]
    assert [r.com for r in res[0]] == [row["com"] for row in ref["rows"]]
    assert res[0][best_ratio(base, res[0], "degrade")].acc == ref["best"]["acc"]
    only_good = evaluate_options(tiny, proxies, enhancer(good[:4], [], site), site)
    torch.testing.assert_close(res[2][0].probs, only_good.probs)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # 3 examples in chunks of 2
    again = sweep_arms(tiny, proxies, arms, site, store=store, progress=False, examples_per_chunk=2)
    torch.testing.assert_close(again[1][1][1].probs, res[1][1].probs)


def test_best_ratio_hand_worked():
    class R:  # stands in for OptionEval: best_ratio reads acc and com only
        def __init__(self, acc, com):
            self.acc, self.com = acc, com
    rows = [R(0.5, 0.4), R(0.3, 0.5), R(0.3, 0.2), R(0.6, 0.6)]
    assert best_ratio(None, rows, "degrade") == 2  # lowest acc, tie broken by lower com
    assert best_ratio(None, rows, "enhance") == 3


def test_pick_readout_rule():
    def c(r, correct, n=100):
        from scipy.stats import binomtest
        p = binomtest(correct, n, 0.25, alternative="greater").pvalue
        return Competence(r, n, correct, 0.25, p, (0.0, 1.0), 0.25)
    assert pick_readout({"letter": c("letter", 20), "cloze": c("cloze", 40), "pmi": c("pmi", 44)}) == "pmi"
    assert pick_readout({"letter": c("letter", 36), "cloze": c("cloze", 44)}) == "letter"
    assert pick_readout({"letter": c("letter", 25), "cloze": c("cloze", 33)}) is None  # p = 0.05 > 0.025


def test_common_refill_layer_counts_hand_worked():
    a, b, c = [5, 1, 9, 7], [9, 5, 2], [7, 3, 9]
    # 9 in 3 sets; 5 and 7 in 2 (mean ranks 0.5 and 1.5); others in one
    assert common([a, b, c]).tolist() == [9, 5, 7]
    assert common([a, b, c], k=2).tolist() == [9, 5]
    assert refill([5, 1, 9, 7, 4, 8], [9, 5], 3).tolist() == [1, 7, 4]
    assert layer_counts([0, 3, 4, 11], (3, 4)).tolist() == [2, 1, 1]
    assert common([[1, 2], [3]]).numel() == 0


def test_arm_rows_against_relative_change(tiny, proxies):
    from neuronloc.interventions import arm_rows
    from neuronloc.metrics import relative_change
    site = tiny.site()
    good, bad = torch.arange(0, 40, 3), torch.arange(60, 100, 3)
    arms = [Arm("x", "degrade", good, bad, 6, ratios=(0.0, 0.5, 1.0))]
    base, res = sweep_arms(tiny, proxies, arms, site, progress=False)
    rows = arm_rows(base, arms, res, n_resamples=50, task="toy")
    assert [r["ratio"] for r in rows] == [0.0, 0.5, 1.0] and all(r["task"] == "toy" for r in rows)
    assert [(r["n_good"], r["n_bad"]) for r in rows] == [(0, 6), (3, 3), (6, 0)]
    for r, e in zip(rows, res[0]):
        c = relative_change(base.acc, e.acc, "down")
        assert r["rac"] == pytest.approx(c.value, nan_ok=True) and r["fail"] >= c.fail
        assert r["effect_acc"] == pytest.approx(-c.value if c.fail else c.value, nan_ok=True)
    assert sum(r["best"] for r in rows) == 1 and "acc_low" in [r for r in rows if r["best"]][0]


def test_new_figures_draw(tmp_path):
    import pandas as pd
    from neuronloc import plots
    fig = plots.change_heatmap(pd.DataFrame([[1.0, -2.0], [0.5, 3.0]], index=["a", "b"], columns=["a", "b"]))
    assert len(plots.save(fig, "h", tmp_path)) == 2
    plots.timing_lines(pd.DataFrame({"answer_tokens": [1, 2, 1, 2], "seconds_per_layer": [1, 1, 1, 2],
                                     "target": ["a", "a", "b", "b"]}))
    plots.probability_shifts(pd.DataFrame({"control": ["x", "y"] * 2, "mode": ["enhance"] * 2 + ["degrade"] * 2,
                                           "ce": [0.1, 0.2, 0.3, 0.4]}))


def test_comprehension_split_hand_worked():
    from neuronloc.interventions import OptionEval, comprehension_split
    correct = torch.tensor([1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)
    uids = [u for u in "abcd" for _ in range(3)]
    res = OptionEval(torch.zeros(12, 4), torch.zeros(12), torch.zeros(12), correct, uids)
    assert comprehension_split(res, 5) == (["a", "c"], ["b", "d"])
    assert comprehension_split(res, 1) == (["a"], ["b"])


def test_competence_json_round_trip_and_coverage(tmp_path):
    from scipy.stats import binomtest

    def c(r, correct, n=100):
        p = binomtest(correct, n, 0.25, alternative="greater").pvalue
        return Competence(r, n, correct, 0.25, p, (0.1, 0.4), 0.25)
    stored = {"t1": {"letter": c("letter", 20), "cloze": c("cloze", 40)}, "t2": {"letter": c("letter", 30)}}
    path = tmp_path / "competence.json"
    write_competence(path, "m", 100, 0, stored)
    assert read_competence(path, seed=0, n=100, model="m") == stored
    assert read_competence(path, seed=0, n=24) == stored  # more questions than the run needs: used
    assert pick_readout(read_competence(path, seed=0)["t1"]) == "cloze"
    # not covering the run: another seed, too few questions, another model, no file
    assert read_competence(path, seed=1) == {}
    assert read_competence(path, seed=0, n=101) == {}
    assert read_competence(path, seed=0, model="other") == {}
    assert read_competence(tmp_path / "missing.json", seed=0) == {}
