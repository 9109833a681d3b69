"""Notebook 03's experiment pieces (neuronloc.experiments.cnl) against independent
computations: the bootstrap interval against a plain-numpy BCa and hand-worked degenerate
samples, erase read-outs against a model copy with the neurons' output weights
zeroed by hand, the erase layout and fine-tuning runs against the same calls made one by
one, and IPP and the CN-01/12 rule by hand."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import tiny_llama

from neuronloc.experiments.cnl import (arm_accuracy, arm_summary, balanced, correct, data_splits, erase_run, finetune, fmt,
                                       high_overlap, interval, ipp, length_batches, plateaued, random_draws)
from neuronloc.interventions import (answer_batches, evaluate_options, evaluate_zeroed, random_neurons, restricted_finetune,
                                     zeroed)
from neuronloc.models import from_module
from neuronloc.neurons import ids_to_mask, mask_to_ids
from neuronloc.scales import CNL
from neuronloc.tasks import MCQuestion
from neuronloc.tasks.loaders import Example

WORDS = ("red", "green", "blue", "gray", "pink", "teal", "gold", "navy")
QUESTIONS = [MCQuestion(f"item {i}{'q' * (i % 5)}: which?", tuple(WORDS[(i + j) % 8] for j in range(4)), 3 * i % 4,
                        style="cloze", readout="cloze") for i in range(12)]


@pytest.fixture(scope="module")
def lm():
    """Weights drawn wide (sd 0.5, not 0.02), so that zeroing a few FFN neurons flips answers."""
    return tiny_llama(seed=3, initializer_range=0.5)


def _masks(lm, *id_lists):
    shape = (lm.site().n_layers, lm.site().n_inner)
    return [ids_to_mask(torch.tensor(ids, dtype=torch.long), shape) for ids in id_lists]


def _correct_by_hand(lm, neurons: list[int]) -> np.ndarray:
    """Per question 1/0 on a copy of the model whose down_proj columns of `neurons` (flat ids)
    are zeroed: a neuron with no output weight contributes nothing, at every position."""
    twin = from_module(copy.deepcopy(lm.model), lm.tokenizer, name="zeroed-twin")
    n_inner = lm.site().n_inner
    with torch.no_grad():
        for i in neurons:
            twin.model.model.layers[i // n_inner].mlp.down_proj.weight[:, i % n_inner] = 0.0
    return evaluate_options(twin, QUESTIONS).correct.numpy().astype(float)


# ---------------------------------------------------------------- interval

def _bca_by_hand(x: np.ndarray, n_resamples: int = 20000, level: float = 0.95) -> tuple[float, float]:
    """Efron's BCa interval of the mean in plain numpy: bias correction z0 from the share of
    resampled means below the mean, acceleration a from the jackknife means."""
    from scipy.stats import norm

    n, mean = len(x), x.mean()
    boot = x[np.random.default_rng(5).integers(0, n, (n_resamples, n))].mean(1)
    z0 = norm.ppf((boot < mean).mean())
    jack = (x.sum() - x) / (n - 1)
    d = jack.mean() - jack
    a = (d ** 3).sum() / (6 * ((d ** 2).sum()) ** 1.5)
    z = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    low, high = np.quantile(boot, norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    return low, high


def test_interval_is_bca_on_a_skewed_sample():
    x = np.random.default_rng(1).exponential(1.0, size=25) ** 2  # mean 2.5; percentile interval (0.84, 5.2)
    low, high = interval(x, n_resamples=20000, seed=0)
    by_hand = _bca_by_hand(x)
    assert (low, high) == pytest.approx(by_hand, rel=0.03)
    assert interval(x, 20000, 0) == (low, high)  # seeded


def test_interval_of_values_that_cannot_vary_is_a_point():
    assert interval([2.0, 2.0, 2.0], 100, 0) == (2.0, 2.0)
    assert interval([np.nan, -1.0, np.inf], 100, 0) == (-1.0, -1.0)  # one finite value
    assert all(math.isnan(v) for v in interval([np.nan], 100, 0))
    low, high = interval([0.0, 1.0, 1.0, 0.0, 1.0], 200, 0)
    assert 0.0 <= low < 0.6 < high <= 1.0


# ---------------------------------------------------------------- erase

def test_correct_equals_a_copy_with_output_weights_zeroed(lm):
    site = lm.site()
    every = list(range(site.n_neurons))
    base = correct(lm, site, QUESTIONS, [])
    assert np.array_equal(base, evaluate_options(lm, QUESTIONS).correct.numpy().astype(float))
    for neurons in ([0, 5, 50, 100, 143], every):
        got = correct(lm, site, QUESTIONS, torch.tensor(neurons))
        assert got.dtype == np.float64 and got.shape == (len(QUESTIONS),)
        assert np.array_equal(got, _correct_by_hand(lm, neurons))
    for neurons in ([0, 5, 50, 100, 143], every):  # the erase is felt: the test could tell a no-op
        assert not np.array_equal(correct(lm, site, QUESTIONS, torch.tensor(neurons)), base)
    assert np.array_equal(correct(lm, site, QUESTIONS, []), base)  # weights restored


def test_evaluate_zeroed_equals_a_copy_with_output_weights_zeroed(lm):
    """Every set of one batched call (per-row 0/1 masks, the prefix once per set, its cache
    repeated for the option rows) reads what a model copy with those down_proj columns
    zeroed reads, option probabilities included; an empty set reads the unedited model."""
    site = lm.site()
    sets = [[], [0, 5, 50, 100, 143], list(range(site.n_neurons)), [7], [1, 60, 61]]
    for readout, rows in (("cloze", 64), ("cloze_norm", 3)):  # rows=3: sets split over several forwards
        got = evaluate_zeroed(lm, QUESTIONS, [torch.tensor(s, dtype=torch.long) for s in sets], site, rows=rows,
                              readout=readout)
        assert len(got) == len(sets)
        for s, g in zip(sets, got):
            twin = from_module(copy.deepcopy(lm.model), lm.tokenizer, name="zeroed-twin")
            with torch.no_grad():
                for i in s:
                    twin.model.model.layers[i // site.n_inner].mlp.down_proj.weight[:, i % site.n_inner] = 0.0
            want = evaluate_options(twin, QUESTIONS, readout=readout)
            torch.testing.assert_close(g.probs, want.probs, atol=1e-5, rtol=1e-4)
            assert torch.equal(g.correct, want.correct)
    assert not all(torch.equal(g.correct, got[0].correct) for g in got[1:])  # the erase is felt
    one_token = [MCQuestion(f"item {i}: which?", ("a", "b", "c", "d"), i % 4, style="cloze", readout="cloze")
                 for i in range(4)]  # single-token options: one row per set
    for s, g in zip(sets, evaluate_zeroed(lm, one_token, sets[:2], site)):
        with zeroed(lm, site, torch.tensor(s, dtype=torch.long)):
            torch.testing.assert_close(g.probs, evaluate_options(lm, one_token).probs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text", "gpt2", "gpt_neox", "gptj"])
def test_evaluate_zeroed_equals_zeroed_weights_on_other_families(family):
    """Sliding-window caches (Gemma 2/3), fused and parallel attention (GPT-2, GPT-NeoX, GPT-J):
    the batched read-out equals `zeroed` weights read one set at a time."""
    from conftest import CharTokenizer
    from test_sites import build

    model = copy.deepcopy(build(family))
    lm = from_module(model, CharTokenizer(model.config.vocab_size), name=family)
    site = lm.site()
    sets = [[], list(range(0, site.n_neurons, 3)), [1, 2, site.n_neurons - 1]]
    got = evaluate_zeroed(lm, QUESTIONS[:5], [torch.tensor(s, dtype=torch.long) for s in sets], site)
    for s, g in zip(sets, got):
        with zeroed(lm, site, torch.tensor(s, dtype=torch.long)):
            torch.testing.assert_close(g.probs, evaluate_options(lm, QUESTIONS[:5]).probs, atol=1e-5, rtol=1e-4)


def test_random_draws_are_seeded_sets_of_the_given_size(lm):
    site = lm.site()
    draws = random_draws(lm, site, QUESTIONS, 40, 3, seed=7)
    assert len(draws) == 3
    for r, got in enumerate(draws):
        ids = [l * site.n_inner + i for l, idx in random_neurons(site, 40, seed=8 + r).items() for i in idx]
        assert len(ids) == 40 and np.array_equal(got, _correct_by_hand(lm, ids))
    base = correct(lm, site, QUESTIONS, [])
    assert all(np.array_equal(d, base) for d in random_draws(lm, site, QUESTIONS, 0, 2, seed=7))


def test_erase_run_reads_each_mask_once_where_it_belongs(lm):
    site = lm.site()
    config = CNL(sigma=6.0, sigmas=(3.0, 6.0), n_random=2)
    a3, a6, b6, kn = _masks(lm, [0, 1, 2, 60, 61, 120], [1, 60], [3, 4, 100], [5, 140])
    masks = {"a": {3.0: a3, 6.0: a6}, "b": {6.0: b6}}
    out = erase_run(lm, site, QUESTIONS, "a", masks, kn, ["a", "b"], config, seed=0)
    assert set(out) == {"base", "located 3", "random 3", "located 6", "random 6", "kn", "kn random", "of a", "of b"}
    assert np.array_equal(out["base"], correct(lm, site, QUESTIONS, []))
    assert np.array_equal(out["located 3"], _correct_by_hand(lm, [0, 1, 2, 60, 61, 120]))
    assert np.array_equal(out["located 6"], _correct_by_hand(lm, [1, 60]))
    assert np.array_equal(out["kn"], _correct_by_hand(lm, [5, 140]))
    assert np.array_equal(out["of b"], _correct_by_hand(lm, [3, 4, 100]))
    assert out["of a"] is out["located 6"]
    # n_random draws at config.sigma and for KN, one at the other sigma; sizes of the mask drawn for
    for k, size, n in (("random 3", 6, 1), ("random 6", 2, 2), ("kn random", 2, 2)):
        assert len(out[k]) == n
        assert all(np.array_equal(d, e) for d, e in zip(out[k], random_draws(lm, site, QUESTIONS, size, n, 0)))
    # a data set that is only evaluated: its base and the trained data sets' masks
    other = erase_run(lm, site, QUESTIONS, "c", masks, kn, ["a", "b"], config, seed=0)
    assert set(other) == {"base", "of a", "of b"}
    assert np.array_equal(other["of a"], out["located 6"])
    # the base model's answers passed in (the notebook's evaluate_options reading): not read again, the rest the same
    given = evaluate_options(lm, QUESTIONS).correct.numpy().astype(float)
    assert np.array_equal(given, out["base"])
    again = erase_run(lm, site, QUESTIONS, "a", masks, kn, ["a", "b"], config, seed=0, base=given[::-1].copy())
    assert list(again) == list(out) and np.array_equal(again["base"], given[::-1])
    assert all(np.array_equal(np.asarray(again[k]), np.asarray(out[k])) for k in out if k != "base")
    with pytest.raises(ValueError, match="2 answers for"):
        erase_run(lm, site, QUESTIONS, "a", masks, kn, ["a", "b"], config, seed=0, base=given[:2])


# ---------------------------------------------------------------- enhance

EXAMPLES = [Example(f"colour {i}{'x' * i}:", ("red", "green", "blue", "gray")[i % 4], uid=str(i)) for i in range(10)]


def test_finetune_evaluates_after_the_chosen_epochs_and_restores_the_weights():
    lm = tiny_llama(seed=4)
    site = lm.site()
    before = copy.deepcopy(lm.model.state_dict())
    (neurons,) = _masks(lm, [0, 7, 50, 99, 140])
    questions = {"own": QUESTIONS[:8], "other": QUESTIONS[8:]}
    run = finetune(lm, site, EXAMPLES, neurons, questions, "own", "located", epochs=(1, 3), lr=1e-2, seed=0)
    assert all(torch.equal(p, before[k]) for k, p in lm.model.state_dict().items())
    assert set(run["acc"]) == {1, 3}
    assert set(run["acc"][1]) == {"own"} and set(run["acc"][3]) == {"own", "other"}
    # the same training made by hand: a fresh run of each length, read at its end
    for epochs in (1, 3):
        twin = from_module(copy.deepcopy(lm.model), lm.tokenizer, name="twin")
        batches = length_batches(twin, EXAMPLES, batch_size=8)
        assert len(batches) == 2
        losses = restricted_finetune(twin, site, mask_to_ids(neurons), batches, lr=1e-2, epochs=epochs,
                                     mode="located", seed=0, progress=False)
        assert run["losses"][:epochs] == pytest.approx(losses, rel=1e-6)
        for t, acc in run["acc"][epochs].items():
            assert acc == pytest.approx(100 * evaluate_options(twin, questions[t]).acc)
    assert run["losses"][-1] < run["losses"][0]  # it trained
    assert run["stopped"] == 3 and run["plateau"] is False and run["steps"] == 6 and len(run["step_losses"]) == 6
    assert run["losses"] == pytest.approx([np.mean(run["step_losses"][:2]), np.mean(run["step_losses"][2:4]),
                                           np.mean(run["step_losses"][4:])])
    assert set(run["pred"]) == {"own", "other"} and all(p in q.options for p, q in zip(run["pred"]["own"], questions["own"]))
    assert 0 <= run["eval_seconds"] <= run["seconds"]


def test_length_batches_group_rows_of_similar_length_in_a_fixed_order(lm):
    ex = [Example("p" + "x" * (7 * i % 23), "red", uid=str(i)) for i in range(20)]
    batches = length_batches(lm, ex, batch_size=8)
    assert sum(b[0].shape[0] for b in batches) == 20
    ordered = sorted(ex, key=lambda e: len(e.prompt) + len(e.answer))
    by_hand = answer_batches(lm, [(e.prompt, " " + e.answer) for e in ordered], batch_size=8)
    perm = np.random.default_rng(0).permutation(3)
    for got, i in zip(batches, perm):
        assert all(torch.equal(a, b) for a, b in zip(got, by_hand[i]))
    # less padding than the original order
    plain = answer_batches(lm, [(e.prompt, " " + e.answer) for e in ex], batch_size=8)
    assert sum(b[0].numel() for b in batches) < sum(b[0].numel() for b in plain)


def test_plateaued_by_hand():
    assert not plateaued([3.0, 2.0, 1.9], window=2, tolerance=0.02)  # fewer than 4 epochs
    # last two 1.0, 0.99 (mean 0.995) vs 1.2, 1.0 (mean 1.1): 9.5 % better -> still learning
    assert not plateaued([1.2, 1.0, 1.0, 0.99], window=2, tolerance=0.02)
    # 1.0, 0.99 vs 1.01, 1.0: 0.995 >= 0.98 * 1.005 -> plateau; a rise also counts
    assert plateaued([1.01, 1.0, 1.0, 0.99], window=2, tolerance=0.02)
    assert plateaued([1.0, 1.0, 1.1, 1.2], window=2, tolerance=0.02)
    assert plateaued([2.0, 1.0], window=1, tolerance=0.5)  # 1.0 >= 0.5 * 2.0: on the boundary, plateau
    assert not plateaued([2.0, 0.99], window=1, tolerance=0.5)


def test_finetune_stops_at_the_plateau_and_reads_the_stopped_model_later():
    lm = tiny_llama(seed=4)
    site = lm.site()
    (neurons,) = _masks(lm, [0, 7, 50, 99, 140])
    questions = {"own": QUESTIONS[:8], "other": QUESTIONS[8:]}
    # tolerance 10: any loss 'plateaus' as soon as 2 epochs ran (window 1)
    run = finetune(lm, site, EXAMPLES, neurons, questions, "own", "located", epochs=(1, 5, 9), lr=1e-2, seed=0,
                   window=1, tolerance=10.0)
    assert run["stopped"] == 2 and run["plateau"] is True and run["steps"] == 4 and len(run["losses"]) == 2
    assert set(run["acc"]) == {1, 2, 5, 9} and set(run["acc"][1]) == {"own"}  # and the stop, read on every data set
    assert run["correct"][5] is run["correct"][2] and run["correct"][9] is run["correct"][2]  # read at the stop
    twin = from_module(copy.deepcopy(lm.model), lm.tokenizer, name="twin")
    batches = length_batches(twin, EXAMPLES, batch_size=8)
    restricted_finetune(twin, site, mask_to_ids(neurons), batches, lr=1e-2, epochs=2, mode="located", seed=0, progress=False)
    for t in questions:
        assert run["acc"][9][t] == pytest.approx(100 * evaluate_options(twin, questions[t]).acc)
    # tolerance -1: never a plateau, the run goes to max(epochs)
    full = finetune(lm, site, EXAMPLES, neurons, questions, "own", "random", epochs=(1, 4), lr=1e-2, seed=3,
                    window=1, tolerance=-1.0)
    assert full["stopped"] == 4 and full["plateau"] is False and full["steps"] == 8


def test_balanced_and_data_splits():
    ex = [Example(f"p{i}", ("a", "b", "c")[i % 3] if i < 20 else "a", uid=str(i)) for i in range(30)]
    got = balanced(ex, 7, seed=1)
    assert len(got) == 6 and sorted(e.answer for e in got) == ["a", "a", "b", "b", "c", "c"]
    assert [int(e.uid) for e in got] == sorted(int(e.uid) for e in got)  # original order
    assert len(balanced(ex, 100)) == 18  # b and c have 7 and 6 examples (i < 20): 6 per answer
    from neuronloc.tasks.loaders import EMOTIONS, cnl_splits
    s = data_splits("emotion", 4, 12, 30, seed=0, max_chars=350, labels=EMOTIONS)
    assert [e.uid for e in s["localize"]] == [e.uid for e in cnl_splits("emotion", 4, 0, 0, seed=0, max_chars=350)["localize"]]
    for part, n in (("finetune", 12), ("eval", 30)):
        counts = {lab: sum(e.answer == lab for e in s[part]) for lab in EMOTIONS}
        assert set(counts.values()) == {n // 6}, counts
    assert not {e.uid for e in s["localize"]} & {e.uid for e in s["finetune"]}
    assert all(len(e.prompt) + len(e.answer) <= 350 for part in s.values() for e in part)
    # an evaluation request beyond the data is capped: IMDB has 36 short test reviews
    imdb = data_splits("imdb", 2, 0, 500, seed=0, max_chars=350, labels=("bad", "good"))
    assert 0 < len(imdb["eval"]) <= 36 and len(imdb["eval"]) % 2 == 0


# ---------------------------------------------------------------- Table 4 and the claim rules

def test_ipp_by_hand():
    # drop 50 - 20 = 30 under the located neurons; random drops 10 and 5: IPP = 30 - 10
    assert ipp({"base": 50.0, "loc": 20.0, "rand": [40.0, 45.0]}, "loc", "rand") == 20.0
    # zeroing the located neurons raised accuracy: a negative IPP
    assert ipp({"base": 25.0, "loc": 50.0, "rand": [25.0]}, "loc", "rand") == -25.0


def test_high_overlap_by_hand():
    assert high_overlap(62.0, 0.2) is True
    assert high_overlap(49.9, 0.2) is False  # below 50 %
    assert high_overlap(60.0, 12.5) is False  # 60 < 5 x 12.5
    assert high_overlap(62.5, 12.5) is True  # both bounds inclusive


def test_fmt_prints_two_significant_digits():
    assert [fmt(0.123456), fmt(np.float64(1234.5)), fmt(7), fmt(float("nan"))] == ["0.12", "1200.0", "7", "nan"]


# ---------------------------------------------------------------- bootstrap over examples and the claims

import pandas as pd  # noqa: E402

from neuronloc import metrics  # noqa: E402
from neuronloc.claims import decide, rule_of  # noqa: E402
from neuronloc.experiments.cnl import (claims, draws_estimate, halves_draws, level_draws,  # noqa: E402
                                       normalised_iou_draws, slope_draws)
from neuronloc.localization import half_agreement, select_cnl  # noqa: E402
from neuronloc.localization.commonality import split_halves  # noqa: E402


def _scores(n, seed, hot=(3, 40)):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, 2, 50, generator=g).abs() * 0.01
    s[:, 0, hot[0]] += 1.0
    s[:, 1, hot[1] % 50] += 1.0
    return s


def test_halves_draws_point_is_the_split_and_draws_stay_within_halves():
    scores = {"gsm8k": _scores(8, 0), "emotion": _scores(6, 1, hot=(3, 41))}
    select = select_cnl(3.0, "std")
    halves, cross = halves_draws(scores, select, sizes=(4,), cross=[("gsm8k", "emotion")], n_resamples=20, seed=2)
    point = halves[(halves.draw == 0) & (halves["size"] == 8)].iloc[0]
    agree = half_agreement(scores["gsm8k"], select, seed=2)
    assert (point["overlap"], point["iou"], point["chance"]) == pytest.approx((agree.overlap, agree.iou, agree.chance))
    # size 4: the first 2 examples of each half
    a, b = split_halves(8, 2)
    small = halves[(halves.draw == 0) & (halves["size"] == 4) & (halves.data == "gsm8k")].iloc[0]
    assert small["overlap"] == pytest.approx(metrics.overlap(select(scores["gsm8k"][a[:2]]), select(scores["gsm8k"][b[:2]])))
    assert sorted(set(halves.draw)) == list(range(21)) and set(halves[halves.data == "emotion"]["size"]) == {4, 6}
    c0 = cross[cross.draw == 0].iloc[0]
    assert c0["iou"] == pytest.approx(metrics.iou(select(scores["gsm8k"]), select(scores["emotion"])))
    assert (halves["overlap"] == 1.0).all()  # the hot neurons dominate every resample


def test_draws_estimate_level_slope_and_normalised_iou_by_hand():
    est = draws_estimate(pd.Series([5.0, 1.0, 2.0, 3.0, np.nan]), 4, "examples")
    assert (est.value, est.lo, est.hi) == pytest.approx((5.0, *np.quantile([1.0, 2.0, 3.0], [0.025, 0.975])))
    assert not draws_estimate(pd.Series([5.0, 1.0]), 4, "examples").has_interval
    halves = pd.DataFrame([
        {"draw": 0, "data": "x", "size": 2, "overlap": 0.2, "chance": 0.0, "iou": 0.5},
        {"draw": 0, "data": "x", "size": 8, "overlap": 0.6, "chance": 0.1, "iou": 0.5},
        {"draw": 0, "data": "y", "size": 4, "overlap": 0.9, "chance": 0.2, "iou": 0.8}])
    assert level_draws(halves).loc[0].to_dict() == pytest.approx({"x": 50.0, "y": 70.0})
    assert slope_draws(halves).loc[0] == pytest.approx((60 - 20) / 2)  # 40 points over log2(8) - log2(2); y has one size
    halves3 = pd.DataFrame([{"draw": 0, "data": d, "size": 4, "overlap": 1.0, "chance": 0.0, "iou": v}
                            for d, v in (("gsm8k", 0.25), ("emotion", 1.0), ("code", 0.64))])
    cross = pd.DataFrame([{"draw": 0, "a": "gsm8k", "b": "emotion", "iou": 0.2}, {"draw": 0, "a": "gsm8k", "b": "code", "iou": 0.1},
                          {"draw": 0, "a": "emotion", "b": "code", "iou": 0.4}])
    # 0.2 / sqrt(0.25) = 0.4; 0.1 / sqrt(0.16) = 0.25; 0.4 / sqrt(0.64) = 0.5 -> 0.4 - 0.5
    assert normalised_iou_draws(halves3, cross).loc[0] == pytest.approx(-0.1)


def _erased(n, rng, drop):
    base = np.ones(n)
    located = {s: (rng.random(n) > d).astype(float) for s, d in drop.items()}
    out = {"base": base, "kn": np.ones(n), "kn random": [np.ones(n), np.ones(n)]}
    for s in drop:
        out[f"located {s:g}"] = located[s]
        out[f"random {s:g}"] = [np.ones(n), np.ones(n)]
    out["of gsm8k"] = np.ones(n)
    return out


def _run(values: dict, stopped: int = 2, pred=None) -> dict:
    """A `finetune` output: `values` {epoch: {data set: 1/0 per question}}."""
    return {"correct": values, "stopped": stopped, "losses": [1.0, 0.9], "pred": pred or {}, "steps": 4, "plateau": True}


def _enhanced(datasets, trained, located, random_draws, without, epochs=(1, 2)):
    """Arms of every trained data set: the same `[question]` values on every data set and epoch."""
    out = {}
    for d in trained:
        def run(v):
            return _run({e: {t: v for t in datasets} for e in epochs}, stopped=max(epochs))
        out[d, "Located"], out[d, "W/o located"] = run(located), run(without)
        out[d, "Random"] = [run(v) for v in random_draws]
    return out


def test_claims_from_hand_made_results():
    rng = np.random.default_rng(0)
    n, sigmas = 60, (3.0, 6.0, 12.0)
    datasets = ["gsm8k", "emotion", "code", "metamath", "imdb"]
    erased = {d: _erased(n, rng, {3.0: 0.8, 6.0: 0.5, 12.0: 0.2}) for d in datasets}
    ones, zeros = np.ones(n), np.zeros(n)
    enhanced = _enhanced(datasets, ("gsm8k", "emotion", "code"), ones, [zeros, zeros], zeros)
    halves, cross = halves_draws({d: _scores(8, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (4,),
                                 [("gsm8k", "emotion"), ("gsm8k", "code"), ("emotion", "code")], 50, 0)
    base = {d: erased[d]["base"] for d in datasets}
    rows = {c.id: c for c in claims(datasets=datasets, competent=["emotion", "code", "imdb"], trained=["gsm8k", "emotion", "code"],
                                    sigma=6.0, sigmas=sigmas, halves=halves, cross=cross, kn_halves=halves,
                                    var_shares={d: 90.0 for d in datasets}, erased=erased, enhanced=enhanced, epochs=(1, 2),
                                    base=base, trivial={d: 0.25 for d in datasets}, n_resamples=200, seed=0)}
    assert sorted(rows) == ["CN-01", *(f"CN-{i}" for i in range(12, 26))]
    assert all(r.verdict == (decide(r.rule, r.as_estimate()) if r.verdict != "n/a" else "n/a") for r in rows.values())
    # masks: every resample agrees completely (overlap 1, chance ~ 2 / 100)
    assert rows["CN-01"].verdict == rows["CN-12"].verdict == "replicated" and rows["CN-01"].n == 8
    assert rows["CN-14"].verdict == "contradicted" and rows["CN-14"].estimate == 90.0  # variance selects most neurons
    # enhance: Located always right, the others never: +100 points, zero-width intervals
    for id in ("CN-15", "CN-16", "CN-17", "CN-24"):
        assert rows[id].estimate == 100.0 and rows[id].ci == [100.0, 100.0] and rows[id].verdict == "replicated"
    assert "paper inconsistent" in rows["CN-16"].flags
    # enhance needs no base competence: all three fine-tuned data sets count (gsm8k is not competent)
    assert rows["CN-15"].n == 3 * n and "best trivial answer 25.0 %" in rows["CN-15"].note
    assert rows["CN-24"].n == 5 * n  # every evaluated data set is unseen by some fine-tuned one
    # erase: random draws never change an answer; located drops 80 / 50 / 20 %, so the largest gap is sigma 12's
    xs = [np.concatenate([erased[d][f"located {s:g}"] for d in ("emotion", "code")]) for s in sigmas]
    gaps = [100 * (np.mean([x[:n].mean(), x[n:].mean()]) - 100 / 100) for x in xs]
    assert rows["CN-18"].estimate == pytest.approx(max(gaps)) and rows["CN-18"].n == 2 * n  # competent erased sets only
    assert rows["CN-18"].verdict == "replicated"
    assert rows["CN-19"].estimate == pytest.approx(np.polyfit(np.log2(sigmas), gaps, 1)[0])
    assert rows["CN-19"].verdict == "replicated"
    # metamath is not competent: CN-21 is decided by its enhance part alone (0 change everywhere: contradicted)
    assert rows["CN-21"].verdict == "contradicted" and "enhance part only" in rows["CN-21"].note
    assert rows["CN-21"].estimate == 0.0 and rows["CN-21"].n == 4 * n
    assert rows["CN-13"].verdict == rows["CN-23"].verdict == "n/a"
    # CN-25: same halves for KN and CNL -> overlap difference 0; the KN set erases nothing -> IPP gap < 0
    assert rows["CN-25"].estimate <= 0 and rows["CN-25"].verdict == "contradicted"


def test_enhance_claims_pair_arms_and_average_random_draws_by_hand():
    rng = np.random.default_rng(3)
    n, datasets = 50, ["emotion", "gsm8k"]
    loc, w = (rng.random(n) < 0.6).astype(float), (rng.random(n) < 0.4).astype(float)
    r = [(rng.random(n) < p).astype(float) for p in (0.3, 0.5)]
    enhanced = _enhanced(datasets, ["emotion"], loc, r, w, epochs=(1, 3))
    halves, cross = halves_draws({d: _scores(6, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (), (), 20, 0)
    rows = {c.id: c for c in claims(datasets=datasets, competent=[], trained=["emotion"], sigma=6.0, sigmas=(6.0,),
                                    halves=halves, cross=cross, kn_halves=halves, var_shares={d: 0.1 for d in datasets},
                                    erased={}, enhanced=enhanced, epochs=(1, 3), base={d: np.zeros(n) for d in datasets},
                                    trivial={d: 1 / 6 for d in datasets}, n_resamples=400, seed=0)}
    margin = 100 * (loc.mean() - max(np.mean(r), w.mean()))
    assert rows["CN-15"].estimate == pytest.approx(margin) and rows["CN-15"].n == n
    v, lo, hi = metrics.bootstrap_ci(lambda l, rr, ww: 100 * (l.mean() - max(rr.mean(), ww.mean())), loc, np.stack(r), w,
                                     n_resamples=400, seed=0)
    assert v == pytest.approx(margin) and lo < v < hi  # the row's interval has a spread of the same kind
    assert rows["CN-17"].estimate == pytest.approx(100 * (loc.mean() - w.mean()))
    assert rows["CN-17"].ci == pytest.approx(list(metrics.diff_ci(100 * loc, 100 * w, n_resamples=400, seed=0)[1:]))
    # unseen: gsm8k only, the same values -> the same margin
    assert rows["CN-24"].estimate == pytest.approx(margin) and "emotion -> gsm8k" in rows["CN-24"].note
    # no competent data set: erase rows n/a, enhance rows measured
    assert rows["CN-18"].verdict == "n/a" and "precondition" in rows["CN-18"].note
    assert all(rows[i].verdict != "n/a" for i in ("CN-15", "CN-16", "CN-17", "CN-24"))
    assert rows["CN-21"].verdict == "n/a"  # GSM8K is not fine-tuned


def test_collapse_flag_and_arm_summary():
    n, datasets = 12, ["emotion", "gsm8k"]
    labels = np.array(["joy", "fear", "love"] * 4)
    enhanced = _enhanced(datasets, ["emotion"], np.ones(n), [np.zeros(n)], np.zeros(n), epochs=(1,))
    enhanced["emotion", "Located"]["pred"] = {"emotion": np.array(["joy"] * 11 + ["fear"])}  # 92 % one answer
    enhanced["emotion", "W/o located"]["pred"] = {"emotion": labels}
    enhanced["emotion", "Random"][0]["pred"] = {"emotion": labels}
    halves, cross = halves_draws({d: _scores(6, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (), (), 10, 0)
    kw = dict(datasets=datasets, competent=[], trained=["emotion"], sigma=6.0, sigmas=(6.0,), halves=halves, cross=cross,
              kn_halves=halves, var_shares={d: 0.1 for d in datasets}, erased={}, enhanced=enhanced, epochs=(1,),
              base={d: np.zeros(n) for d in datasets}, trivial={d: 1 / 6 for d in datasets}, n_resamples=50, seed=0)
    rows = {c.id: c for c in claims(**kw, base_pred={"emotion": labels, "gsm8k": labels})}
    assert "collapse" in rows["CN-17"].flags and "collapse" in rows["CN-15"].flags
    rows = {c.id: c for c in claims(**kw, base_pred={"emotion": np.array(["joy"] * n), "gsm8k": labels})}
    assert "collapse" not in rows["CN-17"].flags  # the base model answers 'joy' always too
    table = arm_summary(enhanced, {d: np.zeros(n) for d in datasets}, {"emotion": labels}, {d: 1 / 6 for d in datasets},
                        lambda d, c: 0.01)
    assert list(table["arm"]) == ["Located", "W/o located", "Random"]
    row = table.set_index("arm").loc["Located"]
    assert (row["acc %"], row["base %"], row["trivial %"], row["p (acc > trivial)"]) == pytest.approx((100, 0, 100 / 6, 0.01))
    assert row["collapse share"] == pytest.approx(11 / 12) and row["collapse"] and row["epochs"] == 1
    runs = [{"acc": {2: {"x": 30.0}}}, {"acc": {2: {"x": 50.0}}}]
    assert arm_accuracy(runs, 2, "x") == 40.0 and arm_accuracy(runs[0], 2, "x") == 30.0


def test_claims_na_when_nothing_is_fine_tuned_or_competent():
    datasets = ["gsm8k", "emotion"]
    halves, cross = halves_draws({d: _scores(6, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (), (), 20, 0)
    rows = {c.id: c for c in claims(datasets=datasets, competent=[], trained=datasets, sigma=6.0, sigmas=(3.0, 6.0),
                                    halves=halves, cross=cross, kn_halves=halves, var_shares={"gsm8k": 0.1, "emotion": 0.2},
                                    erased={}, enhanced={}, epochs=(1,), base={}, trivial={}, n_resamples=50, seed=0)}
    for id in ("CN-18", "CN-19", "CN-25"):
        assert rows[id].verdict == "n/a" and "precondition" in rows[id].note
    for id in ("CN-15", "CN-16", "CN-17", "CN-24"):
        assert rows[id].verdict == "n/a" and "fine-tuned" in rows[id].note
    assert rows["CN-21"].verdict == "n/a" and "needs GSM8K and Meta_Math" in rows["CN-21"].note
    # with Meta_Math among the data sets but no GSM8K run (SCALE=default: `transfer` off), the reason says so
    three = datasets + ["metamath"]
    halves3, cross3 = halves_draws({d: _scores(6, i) for i, d in enumerate(three)}, select_cnl(3.0, "std"), (), (), 20, 0)
    rows3 = {c.id: c for c in claims(datasets=three, competent=[], trained=datasets, sigma=6.0, sigmas=(3.0, 6.0),
                                     halves=halves3, cross=cross3, kn_halves=halves3, var_shares={d: 0.1 for d in three},
                                     erased={}, enhanced={}, epochs=(1,), base={}, trivial={}, n_resamples=50, seed=0)}
    assert rows3["CN-21"].verdict == "n/a" and "not fine-tuned at this scale" in rows3["CN-21"].note
    assert "transfer" in rows3["CN-21"].note
    assert rows["CN-20"].verdict == "n/a"
    # variance shares 0.1 and 0.2 %: inside [0.04, 0.56]
    assert rows["CN-14"].verdict == "replicated" and rows["CN-14"].ci == pytest.approx([0.1, 0.2])


def test_cn21_related_minus_unrelated_by_hand():
    rng = np.random.default_rng(1)
    n, datasets = 40, ["gsm8k", "emotion", "code", "metamath", "imdb"]
    erased = {d: _erased(n, rng, {6.0: 0.5}) for d in datasets}
    erased["metamath"]["base"] = np.zeros(n)  # base 0 on Meta_Math, 1 elsewhere
    erased["metamath"]["of gsm8k"] = np.zeros(n)  # erasing GSM8K's neurons leaves every data set as it was
    values = {1: {t: (np.arange(n) < n // 2).astype(float) if t == "metamath" else np.ones(n) for t in datasets}}
    enhanced = {("gsm8k", "Located"): _run(values, 1), ("gsm8k", "W/o located"): _run(values, 1),
                ("gsm8k", "Random"): [_run(values, 1)]}
    halves, cross = halves_draws({d: _scores(6, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (), [], 20, 0)
    rows = {c.id: c for c in claims(datasets=datasets, competent=datasets, trained=["gsm8k"], sigma=6.0, sigmas=(6.0,),
                                    halves=halves, cross=cross, kn_halves=halves, var_shares={d: 0.1 for d in datasets},
                                    erased=erased, enhanced=enhanced, epochs=(1,), n_resamples=200, seed=0,
                                    base={d: erased[d]["base"] for d in datasets}, trivial={d: 0.25 for d in datasets})}
    # enhance: Meta_Math +50 points, unrelated (emotion, code, imdb) 0 -> +50; erase: all 0 -> gap 0; min = 0
    assert rows["CN-21"].estimate == pytest.approx(0.0) and rows["CN-21"].verdict == "contradicted"  # hi < 11
    assert "enhance part (50.0;" in rows["CN-21"].note and "erase part (0.0;" in rows["CN-21"].note
    assert rows["CN-19"].verdict == "n/a" and "one sigma" in rows["CN-19"].note


def test_cn21_from_a_located_only_gsm8k_run_and_an_erase_read_elsewhere():
    # notebook 03's layout: GSM8K fine-tuned in the Located arm only and read on Emotion, IMDB, Meta_Math (not Code);
    # Code, competent and erased, is the erase part's unrelated data set all the same
    n, datasets = 40, ["gsm8k", "emotion", "code", "metamath", "imdb"]
    half = (np.arange(n) < n // 2).astype(float)
    quarter = (np.arange(n) < 3 * n // 4).astype(float)
    erased = {d: {"base": np.ones(n), "of gsm8k": quarter if d == "metamath" else np.ones(n)} for d in ("code", "metamath")}
    erased["gsm8k"] = _erased(n, np.random.default_rng(0), {6.0: 0.5})  # trained: every key of `erase_run`
    base = {d: np.zeros(n) if d == "metamath" else np.ones(n) for d in datasets}
    read = {4: {"gsm8k": np.ones(n), "emotion": np.ones(n), "imdb": np.ones(n), "metamath": half}}
    enhanced = {("gsm8k", "Located"): _run(read, 4)}
    halves, cross = halves_draws({d: _scores(6, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (), [], 20, 0)
    rows = {c.id: c for c in claims(datasets=datasets, competent=["gsm8k", "code", "metamath"], trained=["gsm8k"], sigma=6.0,
                                    sigmas=(6.0,), halves=halves, cross=cross, kn_halves=halves,
                                    var_shares={d: 0.1 for d in datasets}, erased=erased, enhanced=enhanced, epochs=(1, 2, 4),
                                    n_resamples=200, seed=0, base=base, trivial={d: 0.25 for d in datasets})}
    # enhance: Meta_Math 0 -> 50 %, Emotion and IMDB unchanged: +50; erase: Meta_Math -25, Code 0: 0 - (-25) = +25; min = 25
    assert rows["CN-21"].estimate == pytest.approx(25.0) and rows["CN-21"].n == 3 * n
    assert "enhance part (50.0; unrelated: emotion, imdb)" in rows["CN-21"].note
    assert "erase part (25.0; unrelated: code)" in rows["CN-21"].note
    lo, hi = rows["CN-21"].ci
    assert lo <= 25.0 <= hi and rows["CN-21"].verdict == decide(rows["CN-21"].rule, rows["CN-21"].as_estimate())
    # one arm is not Table 2: the arm claims read no GSM8K run
    assert all(rows[i].verdict == "n/a" for i in ("CN-15", "CN-16", "CN-17", "CN-24"))
