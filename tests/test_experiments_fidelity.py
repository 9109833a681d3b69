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

from neuronloc import metrics
from neuronloc.claims import decide, rule_of
from neuronloc.experiments import claims_table
from neuronloc.experiments.fidelity import (OTHER_FACT, OWN, PARAPHRASES, RANDOM_CIRCUIT, SIZED,
                                            NodeUniverse, activation_test, baseline_table, chance_overlap, claims,
                                            double_zero_table, edit_layers, fact_baselines, fact_edit_layers,
                                            fact_overlaps, fidelity_sets, fidelity_summary, fidelity_table, node_ids,
                                            random_like, recall_table, rome_sweep, sized_circuit, traced_vs_other)
from neuronloc.experiments.fidelity import DIFFERENT as DIFFERENT_FACTS, RANDOM as RANDOM_SETS
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
    sets = fidelity_sets(located, lm.site(), sparse=2, extra={"x": ([[[1]]], 3)})
    assert list(sets) == ["KN", "causal tracing", "knowledge circuit", "circuit, top 2 nodes", "x"]
    assert sets["KN"] == ([[[5, 100], []], [[7], [143]]], 144)
    assert sets["causal tracing"] == ([[[0, 2], [1]], [[2, 1], [0]]], 3)
    # Node(0, 0) -> 0, the MLP of layer 2 -> 2 x 5 + 4; circuits are drawn from 3 layers x (4 heads + 1 MLP)
    assert sets["knowledge circuit"] == ([[[0, 14]] * 2] * 2, NodeUniverse(3, 4)) and len(NodeUniverse(3, 4)) == 15
    assert sets["circuit, top 2 nodes"] == ([[[7, 14]] * 2] * 2, NodeUniverse(3, 4))  # |0.9| (head 1.2 -> 7), then |-0.5| (MLP 2)
    assert sets["x"] == ([[[1]]], 3)


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


# ---------------------------------------------------------------- the paper-sized circuit, ROME layers, claims

def test_sized_circuit_keeps_nodes_by_score_within_the_parameter_budget():
    heads, mlps = torch.zeros(3, 2), torch.zeros(3)  # 3 layers x 2 heads; heads 10 parameters, MLPs 40
    heads[0, 1], mlps[1], heads[2, 0], mlps[2], heads[1, 1] = 0.9, 0.8, 0.7, 0.6, 0.5
    c = Circuit(None, heads, mlps, [], 1.0)
    # budget 0.5 x 120 = 60: head 0.1 (10), MLP 1 (50), head 2.0 would make 60 (kept), MLP 2 overflows (skipped),
    # head 1.1 overflows (70) -> skipped; every zero-score node overflows too
    assert sized_circuit(c, [10, 10, 10], [40, 40, 40], 120, share=0.5) == [Node(0, 1), Node(1), Node(2, 0)]
    assert sized_circuit(c, [10, 10, 10], [40, 40, 40], 120, share=0.05) == []  # no node fits 6 parameters


def test_fidelity_sets_with_the_sized_circuit(lm):
    heads, mlps = torch.zeros(3, 4), torch.zeros(3)
    heads[1, 2] = 0.9
    c = Circuit(None, heads, mlps, [Node(0, 0)], 0.5)
    located = [[_loc([5], [0], c), _loc([6], [1], c)]]
    sets = fidelity_sets(located, lm.site(), sparse=1, sized=lambda circuit: circuit.top(1))
    assert sets[SIZED] == ([[[7], [7]]], NodeUniverse(3, 4))


def test_fact_overlaps_are_the_per_fact_values_of_the_table():
    per = fact_overlaps({"m": (FACTS, 10), "n": ([[[3], [3]], [[4], [5]], [[], []]], 10)})
    assert per["m"].tolist() == pytest.approx(PER_FACT)
    assert per["n"].tolist()[:2] == [1.0, 0.0] and math.isnan(per["n"].iloc[2])


def test_edit_layers_exclude_the_last_layer_and_space_the_rest():
    layers, excluded = edit_layers(30, 6)
    assert layers == [0, 6, 11, 17, 22, 28] and list(excluded) == [29]
    assert edit_layers(4, None) == ([0, 1, 2], {3: excluded[29]})
    assert edit_layers(4, None, subject_is_last=True)[0] == [0, 1, 2, 3]


def test_traced_vs_other_by_hand():
    per_layer = pd.DataFrame([{"fact": 0, "layer": l, "prompt kind": "edited wording", "success": s}
                              for l, s in ((0, 1.0), (5, 0.0), (10, 0.5))])
    t = traced_vs_other(per_layer, {0: 4}, [0, 5, 10])  # traced layer 4 not edited -> nearest edited layer 5
    assert t.iloc[0][["traced layer", "other layers"]].tolist() == [0.0, 0.75]
    # fact 1 edited at the grid and at its traced layer 3: traced = layer 3, other = the grid's mean (3 is not in it)
    per_layer = pd.concat([per_layer, pd.DataFrame([{"fact": 1, "layer": l, "prompt kind": k, "success": s}
                                                    for l, s in ((0, 0.0), (3, 1.0), (5, 1.0), (10, 0.0))
                                                    for k in ("edited wording", "other wordings")])])
    t = traced_vs_other(per_layer, {0: 4, 1: 3}, [0, 5, 10]).set_index(["fact", "prompt kind"])
    assert t.loc[(1, "edited wording")].tolist() == [1.0, pytest.approx(1 / 3)]
    assert t.loc[(1, "other wordings")].tolist() == [1.0, pytest.approx(1 / 3)] and len(t) == 3
    # traced layer on the grid: the other layers are the rest of the grid
    t = traced_vs_other(per_layer, {1: 5}, [0, 5, 10])
    assert t.iloc[0][["traced layer", "other layers"]].tolist() == [1.0, 0.0]


def test_fact_edit_layers_add_the_traced_layer_unless_excluded():
    grid, excluded = edit_layers(30, 6)
    assert fact_edit_layers(grid, 3, excluded) == [0, 3, 6, 11, 17, 22, 28]
    assert fact_edit_layers(grid, 6, excluded) == grid  # already on the grid
    assert fact_edit_layers(grid, 29, excluded) == grid  # the last layer: an edit cannot act there


# ---------------------------------------------------------------- baselines with intervals over facts

def test_node_universe_chance_overlap_by_hand():
    u = NodeUniverse(3, 4)  # ids: layer x 5 + head, the MLP = 4
    # one MLP each: P(the same MLP) = 1/3 -> overlap 1/3
    assert u.random_overlap([4], [9]) == pytest.approx(1 / 3)
    # 2 heads vs 3 heads of 12: E|A n B| = 6/12, overlap (0.5/2 + 0.5/3)/2
    assert u.random_overlap([0, 1], [5, 6, 7]) == pytest.approx((0.5 / 2 + 0.5 / 3) / 2)
    # an MLP alone vs heads alone never meet
    assert u.random_overlap([4], [0, 1]) == 0.0
    # mixed: a = 1 head + 1 MLP, b = 2 heads + 1 MLP: E = 1 x 2 / 12 + 1 x 1 / 3
    e = 2 / 12 + 1 / 3
    assert chance_overlap([0, 4], [5, 6, 9], u) == pytest.approx((e / 2 + e / 3) / 2)
    assert chance_overlap([1, 2], [3], 10) == pytest.approx(3 / 20)  # an int universe: (|A| + |B|) / 2N


def test_fact_baselines_and_baseline_table_by_hand():
    sets = {"m": (FACTS, 10)}
    per = fact_baselines(sets)
    assert per[("m", PARAPHRASES)].tolist() == pytest.approx(PER_FACT)
    # fact 0 vs facts 1 and 2, wording by wording (pairs with an empty set left out):
    # ([1,2],[4]) 0; ([1,2],[1,8,9,6]) (1/2 + 1/4)/2; ([1,2],[4,5]) 0; ([1,2],[6]) 0; ([1,3],[0]) 0; ([1,3],[]) skipped
    assert per[("m", DIFFERENT_FACTS)].iloc[0] == pytest.approx(0.375 / 5)
    # fact 1: ([4],[1,2]) 0, ([4],[1,8,9,6]) 0, ([4,5],[1,2]) 0, ([4,5],[6]) 0 -> 0
    assert per[("m", DIFFERENT_FACTS)].iloc[1] == 0.0
    # random: fact 1 has one non-empty pair (sizes 1, 2): 3/20
    assert per[("m", RANDOM_SETS)].tolist() == pytest.approx([(4 / 20 + 4 / 20 + 4 / 20) / 3, 3 / 20, (5 / 20 + 5 / 20 + 2 / 20) / 3])
    table = baseline_table(per, n_resamples=300, seed=2).set_index("comparison")
    for comp in (PARAPHRASES, DIFFERENT_FACTS, RANDOM_SETS):
        v, lo, hi = metrics.unit_mean_ci(100 * per[("m", comp)].to_numpy(), n_resamples=300, seed=2)
        assert table.loc[comp, ["overlap %", "lo", "hi"]].tolist() == pytest.approx([v, lo, hi])
        assert table.loc[comp, "facts"] == 3
    d = metrics.diff_ci(100 * np.array(PER_FACT), 100 * per[("m", RANDOM_SETS)].to_numpy(), n_resamples=300, seed=2)
    assert table.loc[RANDOM_SETS, ["paraphrases - it (pp)", "diff lo", "diff hi"]].tolist() == pytest.approx(list(d))
    assert table.loc[RANDOM_SETS, "paraphrases - it (pp)"] == pytest.approx(100 * (np.mean(PER_FACT) - per[("m", RANDOM_SETS)].mean()))
    assert math.isnan(table.loc[PARAPHRASES, "paraphrases - it (pp)"])


def test_random_like_keeps_the_numbers_of_heads_and_mlps():
    c = Circuit(None, torch.zeros(30, 9), torch.zeros(30), [], 1.0)
    nodes = [Node(3), Node(1, 2), Node(4, 0), Node(7, 7)]
    gen = torch.Generator().manual_seed(0)
    draws = [random_like(nodes, c.all_nodes, gen) for _ in range(50)]
    assert all(sum(n.head is None for n in d) == 1 and len(set(d)) == 4 for d in draws)
    assert len({tuple(d) for d in draws}) > 40  # fresh draws
    # replayed: one randperm of the 270 heads, then one of the 30 MLPs
    gen = torch.Generator().manual_seed(0)
    heads = [n for n in c.all_nodes if n.head is not None]
    h = torch.randperm(270, generator=gen)[:3].tolist()
    m = torch.randperm(30, generator=gen)[:1].tolist()
    assert draws[0] == [heads[i] for i in h] + [Node(m[0])]


def test_recall_table_by_hand():
    own = [True, False, True, True]
    random = np.array([[False, False, True, False], [False, True, False, False]])  # [draw, fact]
    other = [True, False, False, False]
    t = recall_table(own, random, other, n_resamples=400, seed=3).set_index("circuit")
    assert list(t.index) == [OWN, RANDOM_CIRCUIT, OTHER_FACT]
    assert t.loc[OWN, "recall %"] == 75.0 and t.loc[RANDOM_CIRCUIT, "recall %"] == 25.0 and t.loc[OTHER_FACT, "recall %"] == 25.0
    assert t.loc[RANDOM_CIRCUIT, "own - it (pp)"] == 50.0 and t.loc[OTHER_FACT, "own - it (pp)"] == 50.0
    lo, hi = metrics.diff_ci(100 * np.array(own, float), 100 * random.astype(float), n_resamples=400, seed=3)[1:]
    assert t.loc[RANDOM_CIRCUIT, ["diff lo", "diff hi"]].tolist() == pytest.approx([lo, hi])
    v, lo, hi = metrics.unit_mean_ci(100 * np.array(own, float), n_resamples=400, seed=3)
    assert t.loc[OWN, ["recall %", "lo", "hi"]].tolist() == pytest.approx([v, lo, hi])
    assert (t["facts"] == 4).all()


def _claims_inputs(n=12, seed=0):
    rng = np.random.default_rng(seed)
    overlaps = pd.DataFrame({"KN": rng.uniform(0.1, 0.3, n), "causal tracing": rng.uniform(0.6, 0.9, n),
                             SIZED: rng.uniform(0.0, 1.0, n)})
    p = np.full(n, 0.5)
    kn = pd.DataFrame({"p": p, "double located": p + 0.1, "double random": np.where(np.arange(n) % 2, p + 0.1, p - 0.1),
                       "zero located": p - 0.1, "zero random": p - 0.1})
    rome = pd.DataFrame({"traced layer": np.ones(n), "other layers": np.zeros(n)})
    recall = pd.DataFrame({"top-1": np.arange(n) < 3})
    return overlaps, kn, rome, recall


def test_claims_rows_intervals_and_verdicts_by_hand():
    overlaps, kn, rome, recall = _claims_inputs()
    rows = {c.id: c for c in claims(overlaps, kn, rome, recall, n_resamples=500, seed=1, notes={"CN-03": "x"})}
    assert list(rows) == [f"CN-0{i}" for i in range(2, 10)]
    # CN-03: KN overlaps 10-30 % -> replicated (< 50 %), interval = unit_mean_ci over facts
    v, lo, hi = metrics.unit_mean_ci(100 * overlaps["KN"].to_numpy(), n_resamples=500, seed=1)
    assert (rows["CN-03"].estimate, *rows["CN-03"].ci) == pytest.approx((v, lo, hi))
    assert rows["CN-03"].verdict == "replicated" and rows["CN-03"].n == 12 and rows["CN-03"].n_of == "facts"
    assert rows["CN-03"].note == "x"
    # CN-04: causal tracing 60-90 % -> contradicted (lo > 50 - 8.65)
    assert rows["CN-04"].verdict == "contradicted"
    # CN-02 is the largest of the three means (causal tracing's), decided as 'less 50'
    assert rows["CN-02"].estimate == pytest.approx(100 * overlaps["causal tracing"].mean())
    assert rows["CN-02"].verdict == "contradicted"
    # CN-06: located always rises, random half the time: 50 pp, zero-width? no: paired bootstrap over facts
    assert rows["CN-06"].estimate == pytest.approx(50.0) and rows["CN-06"].verdict == "contradicted"
    # CN-07: both always fall: difference 0 in every resample -> an interval of zero width at 0 < 5 -> replicated
    assert rows["CN-07"].ci == [0.0, 0.0] and rows["CN-07"].verdict == "replicated"
    # CN-08: traced always succeeds, others never: 100 pp -> contradicted
    assert rows["CN-08"].estimate == 100.0 and rows["CN-08"].verdict == "contradicted"
    # CN-09: 3 of 12 recalled = 25 %
    assert rows["CN-09"].estimate == pytest.approx(25.0)
    assert rows["CN-09"].verdict == decide(rule_of("CN-09"), rows["CN-09"].as_estimate())
    table = claims_table(list(rows.values()))
    assert table.loc["CN-07", ["lo", "hi"]].tolist() == [0.0, 0.0] and table.loc["CN-09", ["n", "n of"]].tolist() == [12, "facts"]


def test_claims_inconclusive_when_the_interval_straddles_the_threshold():
    overlaps, kn, rome, recall = _claims_inputs(n=4)
    overlaps[SIZED] = [0.0, 1.0, 0.0, 1.0]  # mean 50 %, interval wide on both sides of 50
    rows = {c.id: c for c in claims(overlaps, kn, rome, recall, n_resamples=500, seed=0)}
    assert rows["CN-05"].ci[0] < 50 < rows["CN-05"].ci[1] and rows["CN-05"].verdict == "inconclusive"
    assert "underpowered" in rows["CN-05"].flags  # half-width > the paper's 42.8 pp effect


def test_conclusions_state_the_tables_numbers():
    import re

    from neuronloc.experiments.fidelity import conclusions
    from neuronloc.report import rounded

    overlaps, kn, rome, recall = _claims_inputs()
    rows = claims(overlaps, kn, rome, recall, n_resamples=200, seed=0)
    sets = {"KN": (FACTS, 10), "causal tracing": ([[[1], [1]], [[2], [3]], [[0], [0]]], 3),
            SIZED: ([[[4], [4]], [[9], [4]], [[0, 1], [0, 2]]], NodeUniverse(3, 4)), "window 1": ([[[1], [2]]] * 3, 3)}
    baselines = baseline_table(fact_baselines(sets), n_resamples=200, seed=0)
    recall_vs = recall_table([True, False, True], np.array([[False, False, True]]), [False, False, False], n_resamples=200, seed=0)
    rome_gap = pd.DataFrame({"traced - other (pp)": [12.5, -3.25], "lo": [0.0, -10.0], "hi": [25.0, 4.0], "facts": [12, 12]},
                            index=["edited wording", "other wordings"])
    text = conclusions(rows, baselines, recall_vs, rome_gap, sensitivity="window 1")
    by = {c.id: c for c in rows}
    for id in ("CN-02", "CN-03", "CN-04", "CN-05", "CN-06", "CN-07", "CN-09"):
        c = by[id]
        assert f"{rounded(c.estimate)} {c.unit} [{rounded(c.ci[0])}, {rounded(c.ci[1])}]" in text, id
    b = baselines.set_index(["method", "comparison"])
    r = b.loc[("causal tracing", RANDOM_SETS)]
    assert f"{rounded(r['paraphrases - it (pp)'])} [{rounded(r['diff lo'])}, {rounded(r['diff hi'])}]" in text
    w = b.loc[("window 1", PARAPHRASES)]
    assert f"window 1: {rounded(w['overlap %'])} [{rounded(w['lo'])}, {rounded(w['hi'])}] %" in text
    assert "other wordings: -3.2 pp [-10.0, 4.0]" in text  # 2 significant digits
    assert f"edited wording: {rounded(12.5)} pp [0.0, 25.0]" in text
    rv = recall_vs.set_index("circuit")
    assert f"random circuits of the same composition {rounded(rv.loc[RANDOM_CIRCUIT, 'recall %'])} %" in text
    assert f"another fact's circuit {rounded(rv.loc[OTHER_FACT, 'recall %'])} %" in text
    assert f"own - other {rounded(rv.loc[OTHER_FACT, 'own - it (pp)'])} pp" in text
    # every number the text states is one of the values above (ids, counts and sizes aside)
    allowed = {str(rounded(v)) for c in rows for v in (c.estimate, *(c.ci or ())) if v is not None}
    allowed |= {str(rounded(v)) for v in baselines.select_dtypes("number").to_numpy().ravel()}
    allowed |= {str(rounded(v)) for v in recall_vs.select_dtypes("number").to_numpy().ravel()}
    allowed |= {str(rounded(v)) for v in rome_gap.to_numpy().ravel()} | {"12", "1", "2"}
    counts = {str(sum(c.verdict == v for c in rows)) for v in ("replicated", "contradicted", "inconclusive", "n/a")}
    for number in re.findall(r"(?<![\w-])-?\d+(?:\.\d+)?(?![\w-])", re.sub(r"CN-\d\d(\.\.\d\d)?", "", text)):
        assert number in allowed | counts, number
