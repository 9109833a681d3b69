"""Skill-neuron probes on synthetic features with the answer planted in a few neurons
(found, ~100 %), at chance without signal or with shuffled labels; feature caching;
test/train deduplication."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import neuronloc as nl
from neuronloc import probes
from neuronloc.attribution import neurgrad_options
from neuronloc.probes import (ActProbe, LMProbProbe, MagnProbe, PolarProbe, ProbeData, RandProbe, TreeProbe,
                              dedup, evaluate_probes, probe_features, training_curve)
from neuronloc.store import Store

from conftest import tiny_llama

N, O = 300, 4
POS, NEG = [7, 120], [42]  # planted NEG neurons: highest / lowest NEG on the correct option
ACT_SPLIT, ACT_PARITY = 33, 250  # planted activations: answer >= 2, answer odd


def synthetic(n: int, seed: int, signal: bool = True, n_options: int = O) -> ProbeData:
    """Noise features; with signal the planted neurons carry the answer (polarity, the
    largest / smallest NEG, and two activation neurons that encode the option splits)."""
    gen = torch.Generator().manual_seed(seed)
    answers = torch.arange(n) % n_options
    answers = answers[torch.randperm(n, generator=gen)]
    negs = torch.randn(n, n_options, N, generator=gen) * 1e-4
    acts = torch.randn(n, N, generator=gen)
    if signal:
        gold = torch.nn.functional.one_hot(answers, n_options).bool()
        for k in POS:
            negs[:, :, k] = torch.where(gold, 3e-4, -1e-4) * (1 + torch.rand(n, n_options, generator=gen))
        for k in NEG:
            negs[:, :, k] = torch.where(gold, -3e-4, 1e-4) * (1 + torch.rand(n, n_options, generator=gen))
        acts[:, ACT_SPLIT] = (answers >= n_options // 2) * 4.0 + 0.3 * torch.randn(n, generator=gen)
        acts[:, ACT_PARITY] = (answers % 2 == 1) * 4.0 + 0.3 * torch.randn(n, generator=gen)
    probs = torch.softmax(torch.randn(n, n_options, generator=gen), -1)
    return ProbeData(negs.to(torch.bfloat16), acts.to(torch.bfloat16), answers, probs, [f"q{i}" for i in range(n)])


@pytest.fixture(scope="module")
def planted():
    return synthetic(240, 0), synthetic(80, 1), synthetic(200, 2)


@pytest.fixture(scope="module")
def noise():
    return synthetic(240, 3, False), synthetic(80, 4, False), synthetic(400, 5, False)


@pytest.mark.parametrize("probe", [PolarProbe, MagnProbe])
def test_vote_probes_find_the_planted_neurons(planted, probe):
    train, valid, test = planted
    p = probe().fit(train, valid)
    assert set(p.ranking[:3].tolist()) == set(POS + NEG)
    assert p.polarity[POS].tolist() == [1, 1] and p.polarity[NEG].tolist() == [-1]
    assert p.k <= 4 and p.valid_curve[p.k] == 1.0
    assert p.accuracy(test) >= 0.99


def test_act_probe_finds_the_split_neurons(planted):
    train, valid, test = planted
    p = ActProbe().fit(train, valid)
    assert p.nodes[(0, 1, 2, 3)][0][0] == ACT_SPLIT
    assert p.nodes[(0, 1)][0][0] == ACT_PARITY and p.nodes[(2, 3)][0][0] == ACT_PARITY
    assert p.accuracy(test) >= 0.99


@pytest.mark.parametrize("source", ["negs", "acts"])
def test_tree_probe_reaches_full_accuracy_on_planted_features(planted, source):
    train, valid, test = planted
    p = TreeProbe(source=source).fit(train)
    assert p.accuracy(test) >= 0.85  # all 300 neurons: each split draws 17 features, mostly noise
    small = TreeProbe(n_trees=30, depth=4, neurons=8, source=source).fit(train)
    planted_ids = POS + NEG if source == "negs" else [ACT_SPLIT, ACT_PARITY]
    assert set(planted_ids) <= set(small.columns.tolist())
    assert small.accuracy(test) >= 0.95


@pytest.mark.parametrize("name", ["polar", "magn", "act", "tree", "rand", "lm_prob"])
def test_probes_are_at_chance_without_signal(noise, name):
    train, valid, test = noise
    acc = probes.PROBES[name]().fit(train, valid).accuracy(test)
    assert abs(acc - test.chance) < 0.1  # 400 questions: 4.6 standard deviations


@pytest.mark.parametrize("name", ["polar", "magn", "act", "tree"])
def test_shuffled_training_labels_fall_to_chance(planted, name):
    """Label-leakage check: trained on permuted answers, the held-out test is at chance."""
    train, valid, test = planted
    big_test = synthetic(400, 9)
    acc = probes.PROBES[name]().fit(train.shuffled(0), valid.shuffled(1)).accuracy(big_test)
    assert abs(acc - big_test.chance) < 0.1


def test_binary_tasks(planted):
    train, valid, test = (synthetic(200, s, n_options=2) for s in (10, 11, 12))
    for name in ("polar", "magn", "act", "tree"):
        assert probes.PROBES[name]().fit(train, valid).accuracy(test) >= 0.99, name


def test_lm_prob_and_rand():
    data = synthetic(100, 0)
    data = replace(data, probs=torch.nn.functional.one_hot(data.answers, O).float())
    assert LMProbProbe().accuracy(data) == 1.0
    pred = RandProbe(seed=3).predict(data)
    assert torch.equal(pred, RandProbe(seed=3).predict(data)) and pred.max() < O


def test_windows_down_the_ranking(planted):
    train, valid, test = planted
    p = MagnProbe().fit(train, valid)
    acc = p.windows(test, width=3)
    assert len(acc) == N // 3
    assert acc[0] >= 0.99 and acc[1:].max() < 0.5  # the first window holds the 3 planted neurons


def test_evaluate_probes_and_training_curve(planted):
    train, valid, test = planted
    rows = evaluate_probes(train, valid, test, names=("rand", "magn", "tree"), options={"tree": {"n_trees": 10}})
    assert [r["probe"] for r in rows] == ["rand", "magn", "tree"]
    assert rows[1]["acc"] >= 0.99 and rows[1]["k"] <= 4 and rows[2]["k"] >= 1
    curve = training_curve(lambda: MagnProbe(), train, valid, test, sizes=[4, 64, 1000])
    assert [r["n"] for r in curve] == [4, 64] and curve[-1]["acc"] >= 0.99


def test_subset_keeps_rows_aligned(planted):
    train, _, _ = planted
    part = train.subset(torch.tensor([5, 2]))
    assert part.uids == ["q5", "q2"] and torch.equal(part.answers, train.answers[[5, 2]])
    assert torch.equal(train.subset(slice(0, 3)).negs, train.negs[:3])


def test_vote_probe_needs_valid_or_k(planted):
    with pytest.raises(ValueError, match="valid"):
        MagnProbe().fit(planted[0])
    assert MagnProbe(k=2).fit(planted[0]).k == 2


# ---------------------------------------------------------------- features on a model

QUESTIONS = [nl.MCQuestion(stem=f"Is {a} more than {b}?", options=("yes", "no", "maybe"), answer=int(a <= b),
                           instruction="Answer with a letter.", uid=f"cmp/{a}/{b}") for a, b in [(1, 2), (3, 1)]]


def test_features_are_neurgrad_per_option_and_cached(tmp_path, monkeypatch):
    lm = tiny_llama(seed=2)
    store = Store(tmp_path)
    data = probe_features(lm, QUESTIONS, store, dtype=torch.float32, progress=False)
    assert data.negs.shape == (2, 3, 3 * 48) and data.acts.shape == (2, 3 * 48) and data.probs.shape == (2, 3)
    assert data.shape == (3, 48) and data.uids == ["cmp/1/2", "cmp/3/1"]
    assert torch.allclose(data.negs[0], neurgrad_options(lm, QUESTIONS[0]).flatten(1), rtol=1e-5, atol=1e-9)
    assert torch.allclose(data.probs.sum(-1), torch.ones(2))
    from neuronloc.interventions import evaluate_options
    assert torch.allclose(data.probs, evaluate_options(lm, QUESTIONS).probs[:, :3], atol=1e-6)  # the model's read-out

    def fail(*args, **kwargs):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(probes, "answer_position_grads", fail)  # the one forward that makes all three features
    again = probe_features(lm, QUESTIONS, store, dtype=torch.float32, progress=False)
    assert torch.equal(again.negs, data.negs) and torch.equal(again.acts, data.acts)
    with pytest.raises(AssertionError, match="recomputed"):  # another read-out is another key
        probe_features(lm, QUESTIONS, store, readout="cloze", dtype=torch.float32, progress=False)


def test_features_need_one_option_count():
    lm = tiny_llama(seed=2)
    other = nl.MCQuestion(stem="Pick", options=("a", "b"), answer=0)
    with pytest.raises(ValueError, match="option count"):
        probe_features(lm, [QUESTIONS[0], other], progress=False)


def test_dedup_drops_test_records_found_in_train():
    train = [QUESTIONS[0], nl.MCQuestion(stem="Other", options=("a", "b"), answer=1)]
    repeat = replace(QUESTIONS[0], uid="test/7", demonstration=QUESTIONS[1])  # same record, another prompt
    kept = dedup([repeat, QUESTIONS[1]], train)
    assert kept == [QUESTIONS[1]]


def test_tree_grid_cells_equal_a_direct_forest(planted):
    train, _, test = planted
    rows = probes.tree_grid(train, test, max_log2=3, neurons=16, seed=0)
    assert [(r["trees"], r["depth"]) for r in rows] == [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (4, 1)]
    direct = TreeProbe(n_trees=2, depth=2, neurons=16, seed=0).fit(train).accuracy(test)
    assert rows[4]["acc"] == direct
    assert max(r["acc"] for r in rows) > 0.6  # the planted neurons separate the options (chance 0.25)


def test_robustness_matrix_transfers_between_contexts(planted, noise):
    """Same features in two contexts: full transfer (1.0); a context of pure noise: its own
    probe is at chance (robustness undefined) and the planted neurons transfer nothing to it."""
    import math
    train, _, test = planted
    flipped = replace(train, negs=-train.negs), replace(test, negs=-test.negs)  # the same neurons, other polarity
    out = probes.robustness_matrix({"x": (train, test), "same": (train, test), "flip": flipped,
                                    "noise": (noise[0], noise[2])}, k=3)
    assert out["acc"]["x", "x"] > 0.9 and out["robustness"]["x", "same"] == pytest.approx(1.0)
    assert out["acc"]["flip", "flip"] > 0.9 and out["robustness"]["x", "flip"] == 0.0  # inverted votes: below chance
    assert math.isnan(out["robustness"]["x", "noise"]) or out["robustness"]["x", "noise"] < 0.5
