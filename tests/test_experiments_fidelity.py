"""Notebook 01's experiment glue (neuronloc.experiments.fidelity) against independent
computations: node ids and located sets by hand, the Eq. 9 fidelity table on hand-worked
sets (interval: scipy's bootstrap directly), the claim from a hand-made table, KN's
double/zero test against plain torch hooks and a replayed random draw, its rise/fall shares
by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from neuronloc.experiments.fidelity import (activation_test, double_zero_table, fidelity_claim, fidelity_sets,
                                            fidelity_summary, fidelity_table, node_ids)
from neuronloc.localization import Circuit, Fact, Node
from neuronloc.localization.validation import Localized

from conftest import scaled_prob, tiny_llama


@pytest.fixture(scope="module")
def lm():
    lm = tiny_llama(seed=2)
    lm.model.double()
    return lm


def test_node_ids_by_hand():
    assert node_ids([Node(2, 3), Node(2), Node(0, 0), Node(29)], n_heads=9) == [23, 29, 0, 299]
    assert node_ids([Node(1), Node(2, 0), Node(0, 3)], n_heads=4) == [9, 10, 3]  # stride 5: no two nodes collide


def _loc(kn, layers, circuit):
    return Localized(torch.tensor(kn, dtype=torch.long), layers, circuit, None)


def test_fidelity_sets_by_hand(lm):
    heads, mlps = torch.zeros(3, 4), torch.zeros(3)  # tiny_llama: 3 layers x 4 heads, 48 neurons per layer
    heads[1, 2], mlps[2], heads[0, 0] = 0.9, -0.5, 0.3
    c = Circuit(None, heads, mlps, [Node(0, 0), Node(2)], 0.5)
    located = [[_loc([5, 100], [0, 2], c), _loc([], [1], c)], [_loc([7], [2, 1], c), _loc([143], [0], c)]]
    sets = fidelity_sets(located, lm.site(), sparse=2)
    assert list(sets) == ["KN", "causal tracing", "knowledge circuit", "circuit, top 2 nodes"]
    assert sets["KN"] == ([[[5, 100], []], [[7], [143]]], 144)
    assert sets["causal tracing"] == ([[[0, 2], [1]], [[2, 1], [0]]], 3)
    assert sets["knowledge circuit"] == ([[[0, 14]] * 2] * 2, 15)  # Node(0, 0) -> 0, the MLP of layer 2 -> 2 x 5 + 4
    assert sets["circuit, top 2 nodes"] == ([[[7, 14]] * 2] * 2, 15)  # |0.9| (head 1.2 -> 7), then |-0.5| (MLP 2)


# three facts x three wordings out of 10 units, worked by hand below
FACTS = [[[1, 2], [1, 2], [1, 3]], [[4], [4, 5], []], [[1, 8, 9, 6], [6], [0]]]
PER_FACT = [(1 + 0.5 + 0.5) / 3,  # identical; 1 shared of 2 and 2, twice
            (1 / 1 + 1 / 2) / 2,  # the pairs with the empty set are skipped
            ((1 / 4 + 1) / 2 + 0 + 0) / 3]
DIFFERENT = 0.375 / 7  # only fact 0 and 2's first wordings share a unit: (1/2 + 1/4) / 2; 2 of 9 pairs hold an empty set
RANDOM = (3 * 4 / 20 + 3 / 20 + 5 / 20 + 5 / 20 + 2 / 20) / 7  # (|A| + |B|) / (2 x 10) over the 7 non-empty pairs


def test_fidelity_table_by_hand():
    table = fidelity_table({"m": (FACTS, 10), "same": ([[[3], [3]], [[4], [4]]], 10)}, n_resamples=200, seed=3)
    m = table[table.method == "m"].set_index("comparison")
    assert list(table.comparison[:3]) == ["paraphrases of one fact", "different facts", "random sets"]
    assert m.loc["paraphrases of one fact", "overlap"] == pytest.approx(np.mean(PER_FACT))
    ci = stats.bootstrap((np.array(PER_FACT),), np.mean, n_resamples=200, method="percentile",
                         random_state=3).confidence_interval
    assert (m.loc["paraphrases of one fact", "lo"], m.loc["paraphrases of one fact", "hi"]) == pytest.approx((ci.low, ci.high))
    assert m.loc["different facts", "overlap"] == pytest.approx(DIFFERENT)
    assert m.loc["random sets", "overlap"] == pytest.approx(RANDOM)
    assert math.isnan(m.loc["random sets", "lo"])
    same = table[table.method == "same"].set_index("comparison")["overlap"]
    assert same.tolist() == [1.0, 0.0, 0.1]  # every fact's wordings agree, no two facts share; (1 + 1) / 20


def test_fidelity_summary_and_claim():
    table = fidelity_table({"KN": (FACTS, 10), "knowledge circuit": ([[[3], [5]], [[4], [4, 5]]], 10),
                            "circuit, top 2 nodes": ([[[3], [4]], [[4], [4]]], 10)}, n_resamples=200, seed=0)
    summary = fidelity_summary(table)
    assert list(summary.index) == ["KN", "knowledge circuit", "circuit, top 2 nodes"]
    assert list(summary.columns) == ["paraphrases of one fact", "95% CI", "different facts", "random sets"]
    assert summary.loc["circuit, top 2 nodes", "paraphrases of one fact"] == 0.5  # (0 + 1) / 2
    lo, hi = table.set_index(["method", "comparison"]).loc[("KN", "paraphrases of one fact"), ["lo", "hi"]]
    assert summary.loc["KN", "95% CI"] == f"{float(f'{lo:.2g}')}-{float(f'{hi:.2g}')}"

    kn = fidelity_claim("CN-03", "KN", "37.3 %", table, n_paraphrases=3, n_facts=3)
    assert kn.ours == pytest.approx(100 * np.mean(PER_FACT)) and kn.verdict == "not replicated"  # 54 % overlap
    assert "3 paraphrases" in kn.claim and kn.note.startswith(f"different facts overlap {float(f'{100 * DIFFERENT:.2g}')} %; 3 PARAREL")
    assert "sparse" not in kn.note
    kc = fidelity_claim("CN-05", "knowledge circuit", "7.2 %", table, 3, 2, figure="f.png", sparse=2)
    assert kc.ours == pytest.approx(100 * (0 + 0.75) / 2) and kc.verdict == "replicated" and kc.figure == "f.png"
    assert kc.note.endswith("; sparse top-2 circuits overlap 50.0 %")  # (0 + 1) / 2: 0.5 is not < 0.5


def _hand_prob(lm, fact, ids, factor):
    """`scaled_prob` of flat neuron ids (layer x 48 + index of the tiny model)."""
    return scaled_prob(lm, fact, {layer: [i % 48 for i in ids if i // 48 == layer] for layer in range(3)}, factor)


def test_activation_test_matches_plain_hooks_and_a_replayed_draw(lm):
    facts = [Fact(torch.tensor([1, 5, 9, 13, 7, 22]), range(1, 3), torch.tensor([40])),
             Fact(torch.tensor([1, 30, 31]), range(1, 2), torch.tensor([70])),
             Fact(torch.tensor([1, 8, 9, 10, 11]), range(2, 4), torch.tensor([12]))]
    kn_sets = [torch.tensor([3, 50, 100]), torch.tensor([], dtype=torch.long), torch.tensor([143, 0])]
    t = activation_test(lm, facts, kn_sets, seed=7)
    assert list(t.columns) == ["p", "n", "double located", "zero located", "double random", "zero random"]
    assert t["n"].tolist() == [3, 2]  # the fact without located neurons is left out
    gen = torch.Generator().manual_seed(7)  # one draw per kept fact, in order
    rand = [torch.randperm(144, generator=gen)[:k].tolist() for k in (3, 2)]
    for row, fact, kn, r in zip(t.itertuples(index=False), [facts[0], facts[2]], [kn_sets[0], kn_sets[2]], rand):
        assert row.p == pytest.approx(_hand_prob(lm, fact, [], 1.0), rel=1e-12)
        assert row[2] == pytest.approx(_hand_prob(lm, fact, kn.tolist(), 2.0), rel=1e-12)
        assert row[3] == pytest.approx(_hand_prob(lm, fact, kn.tolist(), 0.0), rel=1e-12)
        assert row[4] == pytest.approx(_hand_prob(lm, fact, r, 2.0), rel=1e-12)
        assert row[5] == pytest.approx(_hand_prob(lm, fact, r, 0.0), rel=1e-12)
    assert t["double located"].tolist() != t["double random"].tolist()


def test_double_zero_table_by_hand():
    t = pd.DataFrame({"p": [0.5, 0.2, 0.3, 0.4],
                      "double located": [0.6, 0.1, 0.3, 0.9],  # rises 2 of 4, falls 1
                      "double random": [0.6, 0.3, 0.4, 0.5],  # rises 4 of 4: no interval
                      "zero located": [0.1, 0.1, 0.1, 0.1],
                      "zero random": [0.4, 0.3, 0.2, 0.4]})  # rises 1, falls 2
    table = double_zero_table({"d": t, "e": t.iloc[:2]}, n_resamples=200, seed=1).set_index(["data", "condition"])
    assert list(table.index.get_level_values("condition")[:4]) == ["double located", "double random", "zero located", "zero random"]
    d = table.loc["d"]
    assert d["P rises"].tolist() == [0.5, 1.0, 0.0, 0.25] and d["P falls"].tolist() == [0.25, 0.0, 1.0, 0.5]
    assert (d["prompts"] == 4).all() and (table.loc["e", "prompts"] == 2).all()
    assert table.loc[("e", "double located"), "P rises"] == 0.5
    ci = stats.bootstrap((np.array([1.0, 0.0, 0.0, 1.0]),), np.mean, n_resamples=200, method="percentile",
                         random_state=1).confidence_interval
    assert d.loc["double located", "rises 95% CI"] == f"{float(f'{ci.low:.2g}')}-{float(f'{ci.high:.2g}')}"
    assert d.loc["double random", "rises 95% CI"] == "nan-nan"
