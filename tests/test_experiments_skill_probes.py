"""Notebook 05's glue (`experiments.skill_probes`) against independent computations: the
train / valid / test split of an MCEval8K task rechecked record by record against the test
file, probes' right / wrong answers on hand-made features, the paired bootstrap of two
probes against scipy's, App. J's IT1 rewrite of a PAWS question by hand, the probe order
share and the binomial tests against binomial tails summed by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from neuronloc import metrics, render
from neuronloc.experiments.skill_probes import (IT1, above_chance, as_it1, correct, ordering, pooled_test,
                                                probe_options, shots, split, task_table)
from neuronloc.probes import ProbeData
from neuronloc.tasks import MCQuestion, demonstrations
from neuronloc.tasks.loaders import load_task


def _record(q: MCQuestion) -> tuple:
    return q.stem, tuple(q.options), q.answer


def test_split_keeps_test_records_out_of_train_and_valid():
    parts, demos, removed = split("mceval8k/paws", n_train=5, n_valid=3, n_test=4, seed=1)
    every_test = {_record(q) for q in load_task("mceval8k/paws", "test", seed=1)}
    pool = load_task("mceval8k/paws", "train", seed=1)
    clean = [q for q in pool if _record(q) not in every_test]  # by hand: train records that are not test records
    assert removed == len(pool) - len(clean) > 0  # MCEval8K's train repeats PAWS's test
    assert [q.uid for q in parts["train"]] == [q.uid for q in clean[:5]]
    assert [q.uid for q in parts["valid"]] == [q.uid for q in clean[5:8]]
    assert [q.uid for q in parts["test"]] == [q.uid for q in load_task("mceval8k/paws", "test", n=4, seed=1)]
    assert demos and not {_record(d) for d in demos} & every_test


def _question(stem: str, answer: int, **kw) -> MCQuestion:
    return MCQuestion(stem=stem, options=("no", "yes"), answer=answer, style="cloze", **kw)


def test_shots_put_one_demonstration_per_option_before_each_question():
    pool = [_question(f"demo {i}", i % 2) for i in range(6)]
    questions = [_question("q0", 1, uid="q0"), _question("q1", 0, uid="q1")]
    for q, shot in zip(questions, shots(questions, pool, seed=2)):
        chain = demonstrations(shot)
        assert sorted(d.answer for d in chain) == [0, 1]  # NEG §5.4: one per option
        assert {d.stem for d in chain} <= {d.stem for d in pool}
        assert (shot.stem, shot.answer, shot.uid) == (q.stem, q.answer, q.uid)


def test_probe_options_and_correct_on_hand_made_features():
    opts = probe_options((1, 2), seed=3)
    assert opts == {"rand": {"seed": 3}, "tree": {"seed": 3}, "magn": {"sizes": (1, 2)}, "polar": {"sizes": (1, 2)},
                    "act": {"sizes": (1, 2)}}

    def data(answers, probs, carrier=None):
        """Noise NEGs; neuron 0 holds its largest NEG on option `carrier` (default: the answer)."""
        answers = torch.tensor(answers)
        carrier = answers if carrier is None else torch.tensor(carrier)
        negs = torch.randn(len(answers), 2, 8, generator=torch.Generator().manual_seed(len(answers))) * 1e-3
        negs[:, :, 0] = torch.where(torch.nn.functional.one_hot(carrier, 2).bool(), 1.0, -1.0)
        return ProbeData(negs, torch.zeros(len(answers), 8), answers, torch.tensor(probs))

    train = data([0, 1] * 6, [[0.5, 0.5]] * 12)
    valid = data([1, 0, 0, 1], [[0.5, 0.5]] * 4)
    test_a = data([0, 0, 0, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], carrier=[0, 0, 1, 1])
    test_b = data([1, 0], [[0.4, 0.6], [0.4, 0.6]], carrier=[0, 0])
    features = {("mceval8k/a", "zero-shot"): {"train": train, "valid": valid, "test": test_a},
                ("mceval8k/a", "few-shot"): {"train": train, "valid": valid, "test": test_b},
                ("mceval8k/b", "zero-shot"): {"train": train, "valid": valid, "test": test_b}}
    # LM-Prob: argmax of probs against the answers, by hand; zero-shot tasks a then b
    assert correct(features, "lm_prob", opts).tolist() == [1, 0, 1, 1, 1, 0]
    # Magn-Probe: neuron 0 ranks first on train (+1: highest NEG = answer); it votes for its carrier
    assert correct(features, "magn", opts).tolist() == [1, 1, 0, 1, 0, 1]
    assert correct(features, "lm_prob", opts, setting="few-shot").tolist() == [1, 0]
    # Rand: the seed's draw per task, replayed by hand
    draw = lambda n: torch.randint(2, (n,), generator=torch.Generator().manual_seed(3))
    hand = torch.cat([(draw(4) == test_a.answers), (draw(2) == test_b.answers)]).double().tolist()
    assert correct(features, "rand", opts).tolist() == hand


def test_paired_bootstrap_of_two_probes_is_mean_ci_of_the_differences():
    rng = np.random.default_rng(0)
    a, b = (rng.random(40) < 0.6).astype(float), (rng.random(40) < 0.4).astype(float)
    res = stats.bootstrap((a, b), lambda x, y: np.mean(x) - np.mean(y), paired=True, n_resamples=300,
                          random_state=4, method="percentile")
    mean, low, high = metrics.mean_ci(a - b, 300, 4)  # what notebook 05 calls
    assert mean == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((res.confidence_interval.low, res.confidence_interval.high), abs=1e-12)


def test_as_it1_rewrites_the_question_and_its_demonstrations():
    ins = "Is the second sentence a paraphrase of the first? Answer exactly 'yes' or 'no'."
    first = _question("Sentence 1: a\nSentence 2: b\nAnswer:", 1, instruction="")
    second = _question("Sentence 1: c\nSentence 2: d\nAnswer:", 0, instruction="", demonstration=first)
    q = _question("Sentence 1: e\nSentence 2: f\nAnswer:", 1, instruction=ins, demonstration=second, uid="paws/test/7")
    it1 = as_it1(q)
    chain = [*demonstrations(it1), it1]
    assert [x.stem for x in chain] == ["Sentence 1: a\nSentence 2: b", "Sentence 1: c\nSentence 2: d",
                                       "Sentence 1: e\nSentence 2: f"]
    assert [x.answer for x in chain] == [1, 0, 1] and it1.uid == "paws/test/7"
    assert all(x.options == ("not paraphrase", "paraphrase") and x.labels == ("a", "b") and x.style == "mc"
               and x.readout == "letter" for x in chain)
    assert [x.instruction for x in chain] == ["", "", IT1]
    text = render(it1)
    assert text.startswith(IT1) and text.count(IT1) == 1
    assert text.endswith("Sentence 1: e\nSentence 2: f\nOptions:\na. not paraphrase\nb. paraphrase\nAnswer:")
    assert "Answer: b" in text and "Answer: a" in text  # the demonstrations answered by letter


def test_task_table_and_ordering_by_hand():
    index = pd.MultiIndex.from_tuples([("zero-shot", "x"), ("zero-shot", "y"), ("zero-shot", "z"), ("few-shot", "x")],
                                      names=["setting", "task"])
    table = pd.DataFrame({"rand": [0.5, 0.5, 0.25, 0.5], "lm_prob": [0.5, 0.6, 0.25, 0.4],
                          "magn": [0.7, 0.6, 0.5, 0.6], "tree": [0.7, 0.9, 0.4, 0.8]}, index=index)
    zero = task_table(table, "zero-shot")
    assert list(zero.index) == ["x", "y", "z"] and zero.loc["y", "tree"] == 0.9
    assert task_table(table, "one-shot") is None
    assert ordering(zero) == pytest.approx(2 / 3)  # x and y (ties count), not z (tree < magn)
    assert ordering(task_table(table, "few-shot")) == 0.0  # lm_prob < rand


def _tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits), X ~ Binomial(n, p), summed by hand."""
    return sum(math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(hits, n + 1))


def test_binomial_tests_against_hand_summed_tails():
    results = pd.DataFrame([
        {"task": "a", "setting": "zero-shot", "probe": "magn", "acc": 7 / 8, "chance": 0.5},
        {"task": "b", "setting": "zero-shot", "probe": "magn", "acc": 3 / 8, "chance": 0.25},
        {"task": "a", "setting": "few-shot", "probe": "magn", "acc": 2 / 4, "chance": 0.5},
        {"task": "a", "setting": "zero-shot", "probe": "tree", "acc": 0.0, "chance": 0.5}])
    features = {("mceval8k/a", "zero-shot"): {"test": [None] * 8}, ("mceval8k/b", "zero-shot"): {"test": [None] * 8},
                ("mceval8k/a", "few-shot"): {"test": [None] * 4}}
    assert _tail(7, 8, 0.5) == pytest.approx(9 / 256) and _tail(3, 8, 0.25) > 0.05
    assert above_chance(results, features, "magn") == {"a": True, "b": False}
    assert above_chance(results, features, "magn", "few-shot") == {"a": False}
    zero = pooled_test(results, features, "magn")
    assert (zero.hits, zero.total) == (10, 16) and zero.chance == pytest.approx(0.375)  # (8 x .5 + 8 x .25) / 16
    assert zero.p == pytest.approx(_tail(10, 16, 0.375))
    both = pooled_test(results, features, "magn", setting=None)
    assert (both.hits, both.total) == (12, 20) and both.chance == pytest.approx(0.4)
    assert both.p == pytest.approx(_tail(12, 20, 0.4))
