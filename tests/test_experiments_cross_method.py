"""Notebook 07's glue against independent computations: CNL examples from questions (the
read-out's gold continuation by hand), one located set of exactly K neurons and its cost
(`locate` itself, the top-up worked by hand, passes counted with plain torch hooks on the final
norm), the stability pairs, the Deg / Enh conditions of hand-made sets (edits worked out by
hand), balanced evaluation sets, the collapse share and flag, the RAC intervals, the comparison
with RANDOM and the leaders against a bootstrap written out here, the summary, the interleaved
timing with a fake clock, and the conclusions: every number they state is a value of the tables
they are given."""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import neuronloc as nl
from neuronloc.experiments.cross_method import (all_collapsed, as_examples, collapse_of, conclusions, conditions_for,
                                                cost_conclusions, cost_table, evaluation_set, fill_to_k, fixed_labels,
                                                interleaved_seconds, intervention_rows, leaders, method_seeds, num,
                                                pairs, run_locate, summary, task_sets, versus_random)
from neuronloc.localization import locate
from neuronloc.report import rounded
from neuronloc.store import Store
from neuronloc.tasks.loaders import Example

from conftest import tiny_llama


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(seed=2)


@pytest.fixture(scope="module")
def questions():
    return [nl.MCQuestion(stem=f"What is {a}+{a}?", options=("2", "4", "6", "8"), answer=a - 1, uid=f"q{a}")
            for a in (1, 2, 3)]


def test_method_seeds_and_stability_pairs():
    assert method_seeds("random", 3) == [0, 1, 2] and method_seeds("ace", 3) == [0]
    # RANDOM's A set of seed s meets the B set of the next seed, never itself
    assert pairs("random", 3) == [(0, 1), (1, 2), (2, 0)]
    assert pairs("random", 2) == [(0, 1), (1, 0)]
    assert pairs("kn", 5) == [(0, 0)]


def test_as_examples_reads_the_gold_continuation_of_the_readout(lm, questions):
    letter, cloze = questions[1], replace(questions[1], readout="cloze")
    a, b = as_examples([letter, cloze], lm.tokenizer)
    assert a == Example("Question: What is 2+2?\nOptions:\nA. 2\nB. 4\nC. 6\nD. 8\nAnswer:", "B", "q2")
    assert b == Example("Question: What is 2+2?\nAnswer:", "4", "q2")  # options not listed


def test_fill_to_k_keeps_the_own_selection_then_tops_up_by_score():
    ranking = torch.tensor([[0.5, 9.0, -1.0], [3.0, 7.0, 0.5]])  # flat ids 0..5
    # own picks 4, 0; the rest by score: 1 (9.0), then 3 (3.0), then 0 (taken), 2 and 5 tie at ... 5 (0.5) before 2
    assert fill_to_k(torch.tensor([4, 0]), ranking, 4).tolist() == [4, 0, 1, 3]
    assert fill_to_k(torch.tensor([4, 0]), ranking, 5).tolist() == [4, 0, 1, 3, 5]
    assert fill_to_k(torch.tensor([4, 0, 2]), ranking, 2).tolist() == [4, 0]  # trimmed
    assert fill_to_k(torch.tensor([], dtype=torch.long), ranking, 2).tolist() == [1, 4]


def _with_norm_passes(lm, run):
    """run()'s result and the forward and backward calls of the final norm meanwhile (plain torch hooks)."""
    counts = [0, 0]
    norm = lm.model.model.norm
    handles = [norm.register_forward_hook(lambda *_: counts.__setitem__(0, counts[0] + 1)),
               norm.register_full_backward_hook(lambda *_: counts.__setitem__(1, counts[1] + 1))]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return result, counts[0], counts[1]


@pytest.mark.parametrize("method", ["neurgrad", "ace", "cnl", "act", "kn"])
def test_run_locate_is_locate_with_exactly_k_and_its_cost_per_question(lm, questions, method):
    got = run_locate(lm, method, questions, k=5, steps=2)
    data = as_examples(questions, lm.tokenizer) if method == "cnl" else questions
    found, forward, backward = _with_norm_passes(lm, lambda: locate(lm, data, method, k=5, steps=2, progress=False))
    own = found.good[:5]
    assert len(got["good"]) == 5 and got["selected"] == len(own) and torch.equal(got["good"][:len(own)], own)
    if len(own) < 5:  # topped up by the method's own score, best first, none twice
        ranking = (found.scores.abs() if method == "cnl" else found.scores).flatten()
        rest = [i for i in torch.argsort(-ranking.double(), stable=True).tolist() if i not in own.tolist()]
        assert got["good"][len(own):].tolist() == rest[:5 - len(own)]
    assert torch.equal(got["bad"], found.bad[:5])
    assert got["forward"] == forward / 3 and got["backward"] == backward / 3
    assert got["forward"] >= 1 and (got["backward"] >= 1) == (method != "act")  # ACT reads activations only
    assert 0 < got["seconds"] < 60


def test_run_locate_tops_up_kn_to_k(lm, questions):
    """KN's count-based rule picks fewer than a large K on 3 questions: exactly K come back."""
    got = run_locate(lm, "kn", questions, k=60, steps=2)
    assert len(got["good"]) == 60 and len(set(got["good"].tolist())) == 60 and got["selected"] < 60


def test_run_locate_with_a_store_lets_kn_reuse_qrnca_scores(lm, questions, tmp_path):
    store = Store(tmp_path)
    first = run_locate(lm, "qrnca", questions, k=5, steps=2, store=store)
    kn = run_locate(lm, "kn", questions, k=5, steps=2, store=store)
    assert first["backward"] >= 1 and kn["backward"] == 0  # KN's IG read from QRNCA's cache (same target)
    assert torch.equal(kn["good"], run_locate(lm, "kn", questions, k=5, steps=2)["good"])


def test_run_locate_random_is_one_seeded_draw(lm, questions):
    """RANDOM reads no question: its cost is its one draw (no pass); seeds give different sets."""
    a = run_locate(lm, "random", questions, k=5, steps=2, seed=0)
    b = run_locate(lm, "random", questions, k=5, steps=2, seed=1)
    assert torch.equal(a["good"], locate(lm, questions, "random", k=5, seed=0, progress=False).good)
    assert not torch.equal(a["good"], b["good"])
    assert (a["forward"], a["backward"], len(a["bad"]), a["selected"]) == (0, 0, 0, 5)


def _edits(edits) -> list[tuple]:
    return [(e.layer, [int(i) for i in e.neurons], e.op, e.value) for e in edits]


def test_conditions_for_hand_made_sets(lm):
    """Site ffn.mid of tiny_llama: 3 layers x 48 neurons, flat id = layer * 48 + index."""
    site = lm.site()
    assert site.shape == (3, 48)
    ids = lambda *x: torch.tensor(x)
    located = {("t", "ace", "A", 0): {"good": ids(0, 49, 50, 5), "bad": ids(100, 3, 7, 8)},
               ("t", "ace", "B", 0): {"good": ids(1), "bad": ids(2)},  # B: never evaluated
               ("u", "ace", "A", 0): {"good": ids(1), "bad": ids(2)},  # another task
               ("t", "act", "A", 0): {"good": ids(1, 2), "bad": ids()},
               ("t", "random", "A", 0): {"good": ids(10), "bad": ids()},
               ("t", "random", "A", 1): {"good": ids(60), "bad": ids()}}
    conditions = conditions_for(located, "t", ["ace", "act", "random"], random_seeds=2, site=site, k=4)
    assert list(conditions) == ["base", ("ace", 0, "Deg"), ("ace", 0, "Enh"), ("ace", 0, "Deg±"), ("ace", 0, "Enh±"),
                                ("act", 0, "Deg"), ("act", 0, "Enh"), ("random", 0, "Deg"), ("random", 0, "Enh"),
                                ("random", 1, "Deg"), ("random", 1, "Enh")]
    assert conditions["base"] == []
    # ace good: 0 -> (0, 0), 49 -> (1, 1), 50 -> (1, 2), 5 -> (0, 5)
    assert _edits(conditions["ace", 0, "Deg"]) == [(0, [0, 5], "set", 0.0), (1, [1, 2], "set", 0.0)]
    assert _edits(conditions["ace", 0, "Enh"]) == [(0, [0, 5], "scale", 2.0), (1, [1, 2], "scale", 2.0)]
    # k/2 = 2 of each: good 0, 49 and bad 100 -> (2, 4), 3 -> (0, 3)
    assert sorted(_edits(conditions["ace", 0, "Deg±"])) == [(0, [0], "set", 0.0), (0, [3], "scale", 2.0),
                                                           (1, [1], "set", 0.0), (2, [4], "scale", 2.0)]
    assert sorted(_edits(conditions["ace", 0, "Enh±"])) == [(0, [0], "scale", 2.0), (0, [3], "set", 0.0),
                                                           (1, [1], "scale", 2.0), (2, [4], "set", 0.0)]
    assert _edits(conditions["act", 0, "Deg"]) == [(0, [1, 2], "set", 0.0)]
    assert _edits(conditions["random", 1, "Enh"]) == [(1, [12], "scale", 2.0)]


def _sentiment(golds):
    opts = ("positive", "negative", "neutral")
    return [nl.MCQuestion(stem=f"s{i}", options=opts, answer=opts.index(g), uid=f"s{i}") for i, g in enumerate(golds)]


def test_evaluation_set_balances_fixed_labels_only():
    qs = _sentiment(["positive"] * 6 + ["negative"] * 3 + ["neutral"] * 2)
    assert fixed_labels(qs)
    ev = evaluation_set(qs, n=100)  # the rarest label (2) caps it: 2 of each
    assert len(ev) == 6 and sorted(q.options[q.answer] for q in ev) == ["negative"] * 2 + ["neutral"] * 2 + ["positive"] * 2
    assert [q.uid for q in ev] == sorted((q.uid for q in ev), key=lambda u: int(u[1:]))  # original order kept
    assert len(evaluation_set(qs, n=4)) == 3  # 4 // 3 labels = 1 each
    varied = [nl.MCQuestion(stem=f"v{i}", options=(f"a{i}", f"b{i}"), answer=0, uid=f"v{i}") for i in range(5)]
    assert not fixed_labels(varied)
    assert evaluation_set(varied, n=3) == varied[:3]  # options differ per question: the first n


def test_task_sets_are_disjoint_identification_sets_then_the_evaluation_set():
    varied = [nl.MCQuestion(stem=f"v{i}", options=(f"a{i}", f"b{i}"), answer=0, uid=f"v{i}") for i in range(9)]
    got = task_sets(varied, "cloze", False, n_ident=2, n_eval=3)
    assert [q.uid for q in got["A"]] == ["v0", "v1"] and [q.uid for q in got["B"]] == ["v2", "v3"]
    assert [q.uid for q in got["eval"]] == ["v4", "v5", "v6"]  # evaluation_set of the rest: the first n_eval
    assert {q.readout for k in ("A", "B", "eval") for q in got[k]} == {"cloze"}
    assert got["readout"] == "cloze" and got["competent"] is False
    qs = _sentiment(["positive"] * 6 + ["negative"] * 3 + ["neutral"] * 2)
    ev = task_sets(qs, "cloze", True, n_ident=1, n_eval=100)["eval"]  # fixed labels: balanced, as evaluation_set
    assert [q.uid for q in ev] == [q.uid for q in evaluation_set(qs[2:], 100)]


def test_collapse_share_is_the_modal_text_or_position():
    qs = _sentiment(["positive", "negative", "neutral", "positive"])
    assert collapse_of(qs, [1, 1, 1, 0]) == 0.75  # "negative" 3 of 4
    varied = [nl.MCQuestion(stem=f"v{i}", options=(f"a{i}", f"b{i}"), answer=0, uid=f"v{i}") for i in range(4)]
    assert collapse_of(varied, [1, 1, 1, 1]) == 1.0  # texts all differ, position B always
    assert collapse_of(varied, [0, 1, 0, 1]) == 0.5


def _boot(stat, arrays, n_resamples, seed=0, seeded=()):
    """The percentile bootstrap written out: rows resampled with numpy's generator (as
    metrics.bootstrap_ci draws them), the seeds of the arrays in `seeded` too."""
    rng = np.random.default_rng(seed)
    n = arrays[0].shape[-1]
    draws = []
    for _ in range(n_resamples):
        rows = rng.integers(0, n, n)
        if seeded:
            s = rng.integers(0, arrays[seeded[0]].shape[0], arrays[seeded[0]].shape[0])
        draws.append(stat(*(a[s][:, rows] if i in seeded else a[rows] for i, a in enumerate(arrays))))
    return np.quantile(draws, [0.025, 0.975])


def _rac(b, e):
    return 100 * (np.mean(e) - np.mean(b)) / np.mean(b)


def test_intervention_rows_rac_interval_and_collapse_flag():
    qs = _sentiment(["positive", "negative", "neutral"] * 4)  # 12 questions, 4 per label
    keys = ["base", ("ace", 0, "Deg"), ("ace", 0, "Enh"), ("tn", 0, "Deg")]
    correct = np.array([[1] * 8 + [0] * 4,  # base: 8 of 12
                        [1] * 4 + [0] * 8,  # ace Deg: 4 of 12 -> RAC -50
                        [1] * 8 + [0] * 4,  # ace Enh: unchanged, every resample 0
                        [0, 1, 0] * 4], dtype=bool)
    pred = np.array([[0, 1, 2] * 4, [0, 1, 2] * 4, [0, 1, 2] * 4, [1] * 11 + [0]])  # tn answers "negative" 11 of 12
    rows = intervention_rows("t", qs, keys, correct, pred, n_resamples=500)
    deg, enh, tn = rows
    assert (deg["method"], deg["op"], deg["n"], deg["base_acc"], deg["acc"]) == ("ace", "Deg", 12, 8 / 12, 4 / 12)
    assert deg["rac"] == pytest.approx(-50)
    lo, hi = _boot(_rac, [correct[0].astype(float), correct[1].astype(float)], 500)
    assert (deg["low"], deg["high"]) == pytest.approx((lo, hi))
    assert deg["high"] < 0 and (deg["side"], deg["way"]) == ("below 0", "right")
    assert (enh["rac"], enh["low"], enh["high"], enh["side"], enh["way"]) == (0, 0, 0, "contains 0", "")
    assert tn["collapse"] == pytest.approx(11 / 12) and tn["base_collapse"] == pytest.approx(1 / 3) and tn["collapsed"]
    assert not deg["collapsed"] and deg["collapse"] == pytest.approx(1 / 3)
    # the same answers from a base that already collapses: not flagged
    pred2 = pred.copy()
    pred2[0] = pred[3]
    assert not intervention_rows("t", qs, keys, correct, pred2, n_resamples=50)[2]["collapsed"]


def test_way_of_an_enh_interval_below_zero_is_wrong():
    qs = _sentiment(["positive", "negative"] * 5)
    correct = np.array([[1] * 8 + [0] * 2, [1] * 2 + [0] * 8], dtype=bool)
    pred = np.array([[0, 1] * 5, [0, 1] * 5])
    row, = intervention_rows("t", qs, ["base", ("act", 0, "Enh")], correct, pred, n_resamples=200)
    assert row["rac"] == pytest.approx(-75) and (row["side"], row["way"]) == ("below 0", "wrong")


def test_all_collapsed_needs_every_method_but_random():
    changes = pd.DataFrame([("t", "ace", "Enh", True), ("t", "tn", "Enh", True), ("t", "random", "Enh", False),
                            ("t", "ace", "Deg", True), ("t", "tn", "Deg", False),
                            ("u", "ace", "Enh", False), ("u", "tn", "Enh", False)],
                           columns=["task", "method", "op", "collapsed"])
    assert all_collapsed(changes) == [("t", "Enh")]


def test_versus_random_resamples_random_seeds_as_a_level():
    rng = np.random.default_rng(5)
    base = np.array([1] * 10 + [0] * 10, dtype=float)
    m = (rng.random(20) < 0.3).astype(float)
    r = (rng.random((3, 20)) < 0.5).astype(float)
    keys = ["base", ("ace", 0, "Deg"), ("random", 0, "Deg"), ("random", 1, "Deg"), ("random", 2, "Deg"),
            ("ace", 0, "Enh")]
    correct = np.vstack([base, m, r, base])
    rows = versus_random("t", keys, correct, n_resamples=400)
    assert [(x["method"], x["op"]) for x in rows] == [("ace", "Deg")]  # Enh has no RANDOM
    stat = lambda b, x, y: _rac(b, x) - _rac(b, y)
    assert rows[0]["diff"] == pytest.approx(100 * (m.mean() - r.mean()) / base.mean())
    lo, hi = _boot(stat, [base, m, r], 400, seeded=(2,))
    assert (rows[0]["low"], rows[0]["high"]) == pytest.approx((lo, hi))


def test_leaders_rank_by_the_intended_direction_and_compare_paired():
    base = np.array([1] * 10 + [0] * 10, dtype=float)
    a = np.array([1] * 2 + [0] * 18, dtype=float)  # RAC -80
    b = np.array([1] * 6 + [0] * 14, dtype=float)  # RAC -40
    c = np.array([1] * 9 + [0] * 11, dtype=float)  # RAC -10
    keys = ["base", ("c", 0, "Deg"), ("b", 0, "Deg"), ("a", 0, "Deg"), ("random", 0, "Deg"), ("a", 0, "Enh"),
            ("b", 0, "Enh")]
    correct = np.vstack([base, c, b, a, a, a, b])  # RANDOM as strong as a: never a leader
    rows = leaders("t", keys, correct, n_resamples=300)
    deg = [r for r in rows if r["op"] == "Deg"]
    assert [(r["leader"], r["other"]) for r in deg] == [("a", "b"), ("a", "c")]  # runner-up first
    assert deg[0]["diff"] == pytest.approx(-40) and deg[1]["diff"] == pytest.approx(-70)
    lo, hi = _boot(lambda x, y, z: _rac(x, y) - _rac(x, z), [base, a, b], 300)
    assert (deg[0]["low"], deg[0]["high"]) == pytest.approx((lo, hi))
    assert deg[1]["way"] == "right"  # a lowers more than c: the lead resolved
    enh = [r for r in rows if r["op"] == "Enh"]
    assert [(r["leader"], r["other"], r["leader_rac"]) for r in enh] == [("b", "a", pytest.approx(-40))]


def test_summary_of_a_hand_made_table():
    rows = [  # task, competent, method, seed, op, rac, way, collapsed
        ("t1", True, "random", 0, "Enh", 10, "right", False), ("t1", True, "random", 1, "Enh", -10, "", False),
        ("t2", True, "random", 0, "Enh", 0, "", False), ("t2", True, "random", 1, "Enh", 0, "", False),
        ("t1", True, "ace", 0, "Deg", -50, "right", False), ("t2", True, "ace", 0, "Deg", -10, "", False),
        ("t3", False, "ace", 0, "Deg", -100, "right", True),  # not competent: left out
        ("t1", True, "ace", 0, "Enh", 20, "right", True), ("t2", True, "ace", 0, "Enh", -30, "wrong", False),
        ("t4", True, "ace", 0, "Enh", 50, "right", True),  # (t4, Enh) excluded: every method collapsed
        ("t1", True, "random", 0, "Deg", -20, "right", False), ("t1", True, "random", 1, "Deg", 0, "", False),
        ("t2", True, "random", 0, "Deg", 10, "", False), ("t2", True, "random", 1, "Deg", 30, "wrong", False),
    ]
    changes = pd.DataFrame(rows, columns=["task", "competent", "method", "seed", "op", "rac", "way", "collapsed"])
    versus = pd.DataFrame([("t1", "ace", "Deg", "right"), ("t2", "ace", "Deg", ""), ("t1", "ace", "Enh", ""),
                           ("t2", "ace", "Enh", "wrong"), ("t4", "ace", "Enh", "right")],
                          columns=["task", "method", "op", "way"])
    got = summary(changes, versus, excluded=[("t4", "Enh")])
    assert list(got.columns) == ["method", "op", "tasks", "rac", "right way", "wrong way", "collapsed", "beats RANDOM"]
    want = [("random", "Enh", 2, 0.0, "1/4", "0/4", "0/4", ""),  # seeds: t1 (10 - 10) / 2, t2 0
            ("ace", "Deg", 2, -30.0, "1/2", "0/2", "0/2", "1/2"),  # (-50 - 10) / 2
            ("ace", "Enh", 2, -5.0, "1/2", "1/2", "1/2", "0/2"),  # t4 left out
            ("random", "Deg", 2, 5.0, "1/4", "1/4", "0/4", "")]  # t1 -10, t2 20
    assert [tuple(r) for r in got.itertuples(index=False)] == want
    assert summary(changes[~changes.competent]).empty


def test_interleaved_seconds_rotates_and_times_with_the_clock():
    calls, now = [], [0.0]
    cost = {"a": 1.0, "b": 3.0, "c": 0.5}

    def run(m):
        calls.append(m)
        now[0] += cost[m]
        return {"forward": 2 * cost[m], "backward": 1, "good": None}

    times = interleaved_seconds(run, ["a", "b", "c"], repetitions=4, warmup=1, clock=lambda: now[0])
    assert calls == ["a", "b", "c"] + ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert len(times) == 12 and times.groupby("method").seconds.mean().to_dict() == cost
    assert list(times.columns) == ["rep", "method", "seconds", "forward", "backward"]
    assert times.groupby("method").forward.mean().to_dict() == {"a": 2.0, "b": 6.0, "c": 1.0}
    assert list(interleaved_seconds(lambda m: None, ["a"], repetitions=2, warmup=0).columns) == ["rep", "method", "seconds"]


def test_cost_table_means_and_ratios_per_repetition():
    times = pd.DataFrame([(0, "ig", 4.0), (0, "ng", 1.0), (1, "ig", 6.0), (1, "ng", 2.0), (2, "ig", 5.0), (2, "ng", 1.0)],
                         columns=["rep", "method", "seconds"])
    passes = pd.DataFrame({"forward": [5.0, 2.0], "backward": [3.0, 1.0]}, index=["ig", "ng"])
    cost = cost_table(times, passes, reference="ng")
    assert list(cost.index) == ["ig", "ng"]
    assert cost.loc["ig", "seconds"] == pytest.approx(5.0) and cost.loc["ig", "x ref"] == pytest.approx((4 + 3 + 5) / 3)
    assert cost.loc["ig", "low"] <= 5.0 <= cost.loc["ig", "high"] and cost.loc["ig", "forward"] == 5.0
    assert (cost.loc["ng", "x ref"], cost.loc["ng", "x low"], cost.loc["ng", "x high"]) == (1.0, 1.0, 1.0)


NUMBER = re.compile(r"(?<![\w.-])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")


def _tables():
    competence = pd.DataFrame({"task": ["x/common", "x/lama", "x/senti"], "read-out": ["pmi", "cloze", "cloze_norm"],
                               "acc": [0.44, 0.541, 0.43], "best constant": [0.26, 0.3, 0.47],
                               "competent": [True, True, False]}).set_index("task")
    rows = [  # task, method, seed, op, n, base_acc, rac, low, high, way, collapse, collapsed
        ("x/common", "ace", 0, "Deg", 300, 0.4512, -21.23, -30.71, -11.52, "right", 0.31, False),
        ("x/common", "tn", 0, "Deg", 300, 0.4512, -3.33, -8.19, 2.27, "", 0.32, False),
        ("x/common", "ace", 0, "Enh", 300, 0.4512, -12.76, -19.45, -6.06, "wrong", 0.33, False),
        ("x/common", "tn", 0, "Enh", 300, 0.4512, 1.5, -2.5, 5.5, "", 0.3, False),
        ("x/common", "random", 0, "Deg", 300, 0.4512, 0.5, -1.5, 2.5, "", 0.3, False),
        ("x/common", "random", 1, "Deg", 300, 0.4512, -4.4, -7.7, -1.1, "right", 0.3, False),
        ("x/lama", "ace", 0, "Deg", 280, 0.5234, -7.77, -13.3, -2.22, "right", 0.27, False),
        ("x/lama", "tn", 0, "Deg", 280, 0.5234, -4.44, -9.99, 1.11, "", 0.28, False),
        ("x/lama", "ace", 0, "Enh", 280, 0.5234, 33.3, 20.1, 45.6, "right", 0.93, True),
        ("x/lama", "tn", 0, "Enh", 280, 0.5234, 35.5, 22.2, 48.8, "right", 0.95, True),
    ]
    changes = pd.DataFrame(rows, columns=["task", "method", "seed", "op", "n", "base_acc", "rac", "low", "high", "way",
                                          "collapse", "collapsed"])
    versus = pd.DataFrame([("x/common", "ace", "Deg", -19.1, -28.2, -9.93, "right"),
                           ("x/common", "tn", "Deg", -1.23, -6.54, 3.21, ""),
                           ("x/lama", "ace", "Enh", 30.3, 15.5, 44.4, "right")],  # (lama, Enh) collapsed: left out
                          columns=["task", "method", "op", "diff", "low", "high", "way"])
    lead = pd.DataFrame([("x/common", "Deg", "ace", "tn", -21.23, -3.33, -17.9, -26.6, -8.88, "right"),
                         ("x/lama", "Deg", "ace", "tn", -7.77, -4.44, -3.33, -9.12, 2.46, "")],
                        columns=["task", "op", "leader", "other", "leader_rac", "other_rac", "diff", "low", "high", "way"])
    table = pd.DataFrame([("ace", "Deg", 2, -14.5), ("tn", "Deg", 2, -3.885), ("ace", "Enh", 1, -12.76),
                          ("tn", "Enh", 1, 1.5)], columns=["method", "op", "tasks", "rac"])
    jaccard = pd.DataFrame([[1.0, 0.593, 0.0123], [0.593, 1.0, 0.0234], [0.0123, 0.0234, 1.0]],
                           index=["ace", "tn", "random"], columns=["ace", "tn", "random"])
    stability = pd.DataFrame({"mean": [0.1234, 0.0567, 0.00111]}, index=["ace", "tn", "random"])
    selected = pd.DataFrame({"min": [100, 58], "max": [100, 82]}, index=["ace", "kn"])
    return competence, changes, versus, lead, table, jaccard, stability, selected


def test_conclusions_state_only_the_tables_numbers():
    competence, changes, versus, lead, table, jaccard, stability, selected = _tables()
    text = conclusions(competence, changes, versus, lead, table, jaccard, stability, 100, 0.00108, selected)
    values = {num(v) for df in (competence, changes, versus, lead, table, jaccard, stability, selected)
              for v in df.select_dtypes("number").to_numpy().ravel()}
    counts = {str(i) for i in range(0, 11)} | {"90", "95", "100", num(0.00108)}  # counts, K, 90 % rule, 95 % CI, chance
    stated = NUMBER.findall(text)
    assert stated and all(n in values | counts for n in stated), [n for n in stated if n not in values | counts]
    # the cells it cites, as the tables hold them (2 significant digits)
    assert "common (pmi, acc 0.44 vs 0.26); lama (cloze, acc 0.54 vs 0.3)" in text and "beats a constant answer): senti" in text
    assert "common: 300 questions, unedited acc 0.45" in text and "lama: 280 questions" in text
    assert "KN 58-82" in text and "ACE 100" not in text
    # every interval that excludes 0 is named, either way; the collapsed (lama, Enh) is named and left out
    assert "ACE on common -21 % [-31, -12]; ACE on lama -7.8 % [-13, -2.2]" in text
    assert "The wrong way for 1: ACE on common -13 % [-19, -6.1]" in text
    assert "It contains 0 for the other 2" in text and "RANDOM: 1 of 2 seeds' intervals the intended way" in text
    assert "ACE Enh on lama (0.93); TN Enh on lama (0.95)" in text and "Every method collapses on: lama Enh" in text
    assert "ACE on lama 33" not in text and "ACE Enh on lama 30" not in text
    assert "ACE Deg on common -19 pp [-28, -9.9]" in text and "the other 1." in text
    assert "common Deg: ACE leads (-21 %), ahead of TN (-3.3 %) by -18 pp [-27, -8.9] (resolved)" in text
    assert "lama Deg: ACE leads (-7.8 %), ahead of TN (-4.4 %) by -3.3 pp [-9.1, 2.5] (not resolved)" in text
    assert "Mean Deg over the tasks counted** (RAC %): ACE -14, TN -3.9." in text
    assert "ACE-TN 0.59" in text and "ACE 0.12, TN 0.057, RANDOM 0.0011" in text


def test_conclusions_with_no_competent_task_say_so():
    competence, changes, *_ = _tables()
    competence["competent"] = False
    text = conclusions(competence, changes.iloc[:0], *[pd.DataFrame()] * 3, pd.DataFrame(), pd.DataFrame(), 100, 0.001)
    assert "0 of 3 tasks" in text and "nothing below is evidence" in text


def test_cost_conclusions_state_the_cost_table():
    cost = pd.DataFrame({"seconds": [2.0512, 0.3594], "low": [1.98, 0.351], "high": [2.12, 0.368],
                         "forward": [5.25, 2.25], "backward": [3.0, 1.0], "x ref": [5.71, 1.0], "x low": [5.5, 1.0],
                         "x high": [5.93, 1.0]}, index=["ace", "neurgrad"])
    text = cost_conclusions(cost, 11.93, 5)
    assert "ACE 2.1 s [2, 2.1] (5.2 forward + 3 backward passes), 5.7x [5.5, 5.9] NeurGrad" in text  # round half even
    assert "NeurGrad 0.36 s [0.35, 0.37] (2.2 forward + 1 backward passes)." in text
    assert "mean of 5 interleaved repetitions" in text and "took 12 min" in text
    values = {num(v) for v in cost.to_numpy().ravel()} | {"5", "12", "95"}
    assert all(n in values for n in NUMBER.findall(text))
