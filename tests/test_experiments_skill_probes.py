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


# ---------------------------------------------------------------- claims (NG-15 ... NG-29, NG-34)

def _composition(n_tasks=22, off=()):
    genres = ["fact", "linguistic", "classification", "nli", "self-reflection", "multilingual"]
    rows = [{"task": f"t{i}", "genre": genres[i % 6], "train": 6000, "valid": 1000, "test": 1000,
             "options": 4, "largest answer share": 0.26} for i in range(n_tasks - 1)]
    rows.append({"task": "stereoset", "genre": "self-reflection", "train": 3171, "valid": 529, "test": 529,
                 "options": 3, "largest answer share": 0.36})
    for r in rows:
        if r["task"] in off:
            r["test"] = 999
    return rows


def _claims_res(n=40, seed=0):
    """Hand-made results of one factual competent task: Magn right on 3 of 4 questions, LM-Prob on 1 of 2,
    Tree on every one, Act on 1 of 4; baseline 0.25."""
    rng = np.random.default_rng(seed)
    magn = (np.arange(n) % 4 != 0).astype(float)
    lm = (np.arange(n) % 2 == 0).astype(float)
    correct = {"rand": (rng.random(n) < 0.25).astype(float), "lm_prob": lm, "polar": magn.copy(), "magn": magn,
               "tree": np.ones(n), "act": (np.arange(n) % 4 == 1).astype(float)}
    return {"tasks": ["myriadlama"], "readout": "cloze", "task": np.array(["myriadlama"] * n), "correct": correct,
            "baseline": 0.25, "letter": np.zeros(n), "leak": None, "few": None, "few_baseline": None,
            "zero_abs": np.full(10, 1.0), "few_abs": np.linspace(2.0, 4.0, 10),
            "paws": {"opposite": np.array([9.0, 1.0, 5.0]), "moving": np.array([10.0, 10.0, 10.0]), "r": 0.5},
            "train_curve": {1: np.zeros(n), 128: magn, 200: magn}, "at_k": magn, "at_max": lm, "k": "16", "k_max": 8192,
            "last_windows": np.full(n, 0.3), "optimal_sizes": {"myriadlama": 16}, "optimal_depths": {"myriadlama": 4},
            "composition": _composition()}


def test_claims_rows_verdicts_and_intervals_over_questions():
    from neuronloc.claims import decide
    from neuronloc.experiments.skill_probes import claims

    cfg = type("Cfg", (), {"window": 64})()
    res = _claims_res()
    rows = {c.id: c for c in claims(res, cfg, n_resamples=400, seed=2)}
    assert sorted(rows) == [f"NG-{i}" for i in (*range(15, 30), 34)]
    for c in rows.values():
        assert c.verdict == "n/a" or c.verdict == decide(c.rule, c.as_estimate())
    # NG-16: Magn - LM-Prob paired over the 40 questions, by hand, and the interval of the per-question differences
    d = res["correct"]["magn"] - res["correct"]["lm_prob"]
    _, lo, hi = metrics.unit_mean_ci(d, n_resamples=400, seed=2)
    assert rows["NG-16"].estimate == pytest.approx(0.25) and rows["NG-16"].ci == pytest.approx([lo, hi], abs=1e-12)
    assert (rows["NG-16"].n, rows["NG-16"].n_of) == (40, "questions")
    assert rows["NG-16"].verdict == ("replicated" if lo > 0 else "inconclusive")
    # NG-15: LM-Prob 0.5 against the baseline 0.25
    assert rows["NG-15"].estimate == pytest.approx(0.25)
    # NG-17: Tree (1.0) - Magn (0.75) -> 0.25; NG-18: min(0.25, 0.25, 0.25)
    assert rows["NG-17"].estimate == pytest.approx(0.25) and rows["NG-18"].estimate == pytest.approx(0.25)
    # NG-20: ratio of the means 3.0 / 1.0; NG-21: (9 + 1 + 5) / 30 = 0.5 < 0.9 - sesoi -> contradicted
    assert rows["NG-20"].estimate == pytest.approx(3.0) and rows["NG-20"].verdict == "replicated"
    assert rows["NG-21"].estimate == pytest.approx(0.5) and rows["NG-21"].verdict == "contradicted"
    # NG-23: Magn - Act = 0.75 - 0.25 on the factual task
    assert rows["NG-23"].estimate == pytest.approx(0.5)
    # NG-25: gain 1 -> 128 (0.75) minus gain 128 -> 200 (0) = 0.75
    assert rows["NG-25"].estimate == pytest.approx(0.75) and rows["NG-25"].verdict == "replicated"
    # NG-28: windows at 0.3 on every question against 0.25: zero-width interval at 0.05
    assert rows["NG-28"].estimate == pytest.approx(0.05) and rows["NG-28"].ci == pytest.approx([0.05, 0.05])
    # n/a rows: one (factual) task cannot compare factual with non-factual; few-shot not run; 5 LLMs; PAWS robustness
    for id in ("NG-19", "NG-22", "NG-24", "NG-27", "NG-29"):
        assert rows[id].verdict == "n/a" and rows[id].note
    # NG-34: 22 tasks at the paper's sizes (Stereoset 529) -> replicated
    assert rows["NG-34"].estimate == 22 and rows["NG-34"].verdict == "replicated"


def test_claims_contradicted_and_measured_factual_against_other_tasks():
    from neuronloc.experiments.skill_probes import claims

    cfg = type("Cfg", (), {"window": 64})()
    res = _claims_res()
    res["correct"]["lm_prob"] = np.zeros(40)  # LM-Prob never right: 0 - 0.25, zero width -> contradicted
    res["tasks"], res["task"] = ["myriadlama", "agnews"], np.array(["myriadlama"] * 20 + ["agnews"] * 20)
    res["optimal_sizes"] = {"myriadlama": 4096, "agnews": 16}
    res["optimal_depths"] = {"myriadlama": 4, "agnews": 64}
    res["composition"] = _composition(off=("t3",))
    rows = {c.id: c for c in claims(res, cfg, n_resamples=200)}
    assert rows["NG-15"].estimate == pytest.approx(-0.25) and rows["NG-15"].verdict == "contradicted"
    assert rows["NG-24"].estimate == pytest.approx(12 - 4) and rows["NG-24"].verdict == "inconclusive"  # no interval
    assert "no interval" in rows["NG-24"].flags
    assert rows["NG-29"].estimate == pytest.approx(2 - 6)
    assert rows["NG-23"].n == 20  # Magn - Act on the factual task's questions only
    assert rows["NG-34"].estimate == 21 and rows["NG-34"].verdict == "contradicted"


def test_window_hits_and_baseline_by_hand():
    from neuronloc.experiments.skill_probes import baseline, window_hits
    from neuronloc.probes import MagnProbe

    # 4 neurons, 2 options; neurons 0, 1 carry the answer, neurons 2, 3 always favour option 0
    answers = torch.tensor([0, 1, 1, 0])
    gold = torch.nn.functional.one_hot(answers, 2).bool()
    first = torch.tensor([[1.0, -1.0]] * 4)
    negs = torch.stack([torch.where(gold, 1.0, -1.0) if i < 2 else first for i in range(4)], -1)
    data = ProbeData(negs, torch.zeros(4, 4), answers)
    magn = MagnProbe(k=1).fit(data)
    magn.ranking = torch.tensor([0, 1, 2, 3])  # the last 50 % of the width-1 windows: neurons 2 and 3, answering 0
    assert window_hits(magn, data, width=1, last=0.5).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert window_hits(magn, data, width=2, last=0.5).tolist() == [1.0, 0.0, 0.0, 1.0]
    magn.ranking = torch.tensor([2, 3, 0, 1])
    assert window_hits(magn, data, width=1, last=0.5).tolist() == [1.0] * 4
    qs = [MCQuestion(stem="s", options=("pos", "neg", "neu"), answer=a) for a in (0, 0, 0, 1)]
    assert baseline(qs) == 0.75  # "pos" always beats 1/3
