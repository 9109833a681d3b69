"""Notebook 07's glue against independent computations: CNL examples from questions (the
read-out's gold continuation by hand), one located set and its cost (`locate` itself and
passes counted with plain torch hooks on the final norm), the stability pairs, the Deg / Enh
conditions of hand-made sets (edits worked out by hand) and the RAC summary of a hand-made
table."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

import neuronloc as nl
from neuronloc.experiments.cross_method import as_examples, conditions_for, method_seeds, pairs, run_locate, summary
from neuronloc.localization import locate
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


@pytest.mark.parametrize("method", ["neurgrad", "ace", "cnl", "act"])
def test_run_locate_is_locate_with_its_cost_per_question(lm, questions, method):
    got = run_locate(lm, method, questions, k=5, steps=2)
    data = as_examples(questions, lm.tokenizer) if method == "cnl" else questions
    found, forward, backward = _with_norm_passes(lm, lambda: locate(lm, data, method, k=5, steps=2, progress=False))
    assert torch.equal(got["good"], found.good[:5]) and torch.equal(got["bad"], found.bad[:5])
    assert len(got["good"]) == 5
    assert got["forward"] == forward / 3 and got["backward"] == backward / 3
    assert got["forward"] >= 1 and (got["backward"] >= 1) == (method != "act")  # ACT reads activations only
    assert 0 < got["seconds"] < 60


def test_run_locate_random_is_one_seeded_draw(lm, questions):
    """RANDOM reads no question: its cost is its one draw (no pass); seeds give different sets."""
    a = run_locate(lm, "random", questions, k=5, steps=2, seed=0)
    b = run_locate(lm, "random", questions, k=5, steps=2, seed=1)
    assert torch.equal(a["good"], locate(lm, questions, "random", k=5, seed=0, progress=False).good)
    assert not torch.equal(a["good"], b["good"])
    assert (a["forward"], a["backward"], len(a["bad"])) == (0, 0, 0)


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


def test_summary_of_a_hand_made_table():
    rows = [  # task, competent, method, seed, op, rac, low, high
        ("t1", True, "random", 0, "Enh", 10, 1, 20), ("t1", True, "random", 1, "Enh", -10, -20, 0),
        ("t2", True, "random", 0, "Enh", 0, -5, 5), ("t2", True, "random", 1, "Enh", 0, -1, 1),
        ("t1", True, "ace", 0, "Deg", -50, -80, -10), ("t2", True, "ace", 0, "Deg", -10, -30, 5),
        ("t3", False, "ace", 0, "Deg", -100, -100, -90),  # not competent: left out
        ("t1", True, "ace", 0, "Enh", 20, 5, 40), ("t2", True, "ace", 0, "Enh", 0, -10, 10),
        ("t1", True, "random", 0, "Deg", -20, -40, -1), ("t1", True, "random", 1, "Deg", 0, -10, 10),
        ("t2", True, "random", 0, "Deg", 10, -5, 20), ("t2", True, "random", 1, "Deg", 30, 2, 50),
    ]
    changes = pd.DataFrame(rows, columns=["task", "competent", "method", "seed", "op", "rac", "low", "high"])
    got = summary(changes)
    assert list(got.columns) == ["method", "op", "rac", "CI excl. 0, right way"]
    want = [("random", "Enh", 0.0, "1/4"),  # seeds: t1 (10 - 10) / 2, t2 0; only (t1, 0) above 0
            ("ace", "Deg", -30.0, "1/2"),  # (-50 - 10) / 2; t1's interval below 0
            ("ace", "Enh", 10.0, "1/2"),
            ("random", "Deg", 5.0, "1/4")]  # t1 -10, t2 20; per seed only (t1, 0) below 0 (seed-averaged: none)
    assert [tuple(r) for r in got.itertuples(index=False)] == want
    assert summary(changes[~changes.competent]).empty
