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

from neuronloc.experiments.cnl import correct, erase_run, finetune, fmt, high_overlap, interval, ipp, random_draws
from neuronloc.interventions import answer_batches, evaluate_options, random_neurons, restricted_finetune
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
        batches = answer_batches(twin, [(e.prompt, " " + e.answer) for e in EXAMPLES], batch_size=8)
        assert len(batches) == 2
        losses = restricted_finetune(twin, site, mask_to_ids(neurons), batches, lr=1e-2, epochs=epochs,
                                     mode="located", seed=0, progress=False)
        assert run["losses"][:epochs] == pytest.approx(losses, rel=1e-6)
        for t, acc in run["acc"][epochs].items():
            assert acc == pytest.approx(100 * evaluate_options(twin, questions[t]).acc)
    assert run["losses"][-1] < run["losses"][0]  # it trained


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


def test_claims_from_hand_made_results():
    rng = np.random.default_rng(0)
    n, sigmas = 60, (3.0, 6.0, 12.0)
    datasets = ["gsm8k", "emotion", "code", "metamath", "imdb"]
    erased = {d: _erased(n, rng, {3.0: 0.8, 6.0: 0.5, 12.0: 0.2}) for d in datasets}
    ones, zeros = np.ones(n), np.zeros(n)
    enhanced = {}
    for d in ("gsm8k", "emotion", "code"):
        for label, v in (("Located", ones), ("Random", zeros), ("W/o located", zeros)):
            enhanced[d, label] = {"correct": {1: {d: v}, 2: {t: v for t in datasets}}}
    halves, cross = halves_draws({d: _scores(8, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (4,),
                                 [("gsm8k", "emotion"), ("gsm8k", "code"), ("emotion", "code")], 50, 0)
    rows = {c.id: c for c in claims(datasets=datasets, competent=["emotion", "code", "imdb"], trained=["gsm8k", "emotion", "code"],
                                    sigma=6.0, sigmas=sigmas, halves=halves, cross=cross, kn_halves=halves,
                                    var_shares={d: 90.0 for d in datasets}, erased=erased, enhanced=enhanced, epochs=(1, 2),
                                    n_resamples=200, seed=0)}
    assert sorted(rows) == ["CN-01", *(f"CN-{i}" for i in range(12, 26))]
    assert all(r.verdict == (decide(r.rule, r.as_estimate()) if r.verdict != "n/a" else "n/a") for r in rows.values())
    # masks: every resample agrees completely (overlap 1, chance ~ 2 / 100)
    assert rows["CN-01"].verdict == rows["CN-12"].verdict == "replicated" and rows["CN-01"].n == 8
    assert rows["CN-14"].verdict == "contradicted" and rows["CN-14"].estimate == 90.0  # variance selects most neurons
    # enhance: Located always right, the others never: +100 points, zero-width intervals
    for id in ("CN-15", "CN-16", "CN-17", "CN-24"):
        assert rows[id].estimate == 100.0 and rows[id].ci == [100.0, 100.0] and rows[id].verdict == "replicated"
    assert "paper inconsistent" in rows["CN-16"].flags
    assert rows["CN-15"].n == 2 * n  # emotion and code: the competent modified data sets (gsm8k is not competent)
    # erase: random draws never change an answer; located drops 80 / 50 / 20 %, so the largest gap is sigma 12's
    xs = [np.concatenate([erased[d][f"located {s:g}"] for d in ("emotion", "code")]) for s in sigmas]
    gaps = [100 * (np.mean([x[:n].mean(), x[n:].mean()]) - 100 / 100) for x in xs]
    assert rows["CN-18"].estimate == pytest.approx(max(gaps))
    assert rows["CN-18"].verdict == "replicated"
    assert rows["CN-19"].estimate == pytest.approx(np.polyfit(np.log2(sigmas), gaps, 1)[0])
    assert rows["CN-19"].verdict == "replicated"
    # metamath is not competent: CN-21 n/a with the reason; BIG claims n/a
    assert rows["CN-21"].verdict == "n/a" and "Meta_Math" in rows["CN-21"].note
    assert rows["CN-13"].verdict == rows["CN-23"].verdict == "n/a"
    # CN-25: same halves for KN and CNL -> overlap difference 0; the KN set erases nothing -> IPP gap < 0
    assert rows["CN-25"].estimate <= 0 and rows["CN-25"].verdict == "contradicted"


def test_claims_na_when_no_modified_data_set_is_competent():
    datasets = ["gsm8k", "emotion"]
    halves, cross = halves_draws({d: _scores(6, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (), (), 20, 0)
    rows = {c.id: c for c in claims(datasets=datasets, competent=[], trained=datasets, sigma=6.0, sigmas=(3.0, 6.0),
                                    halves=halves, cross=cross, kn_halves=halves, var_shares={"gsm8k": 0.1, "emotion": 0.2},
                                    erased={}, enhanced={}, epochs=(1,), n_resamples=50, seed=0)}
    for id in ("CN-15", "CN-16", "CN-17", "CN-18", "CN-19", "CN-24", "CN-25"):
        assert rows[id].verdict == "n/a" and "precondition" in rows[id].note
    assert rows["CN-20"].verdict == "n/a"
    # variance shares 0.1 and 0.2 %: inside [0.04, 0.56]
    assert rows["CN-14"].verdict == "replicated" and rows["CN-14"].ci == pytest.approx([0.1, 0.2])


def test_cn21_related_minus_unrelated_by_hand():
    rng = np.random.default_rng(1)
    n, datasets = 40, ["gsm8k", "emotion", "code", "metamath", "imdb"]
    erased = {d: _erased(n, rng, {6.0: 0.5}) for d in datasets}
    erased["metamath"]["base"] = np.zeros(n)  # base 0 on Meta_Math, 1 elsewhere
    erased["metamath"]["of gsm8k"] = np.zeros(n)  # erasing GSM8K's neurons leaves every data set as it was
    enhanced = {("gsm8k", label): {"correct": {1: {t: (np.arange(n) < n // 2).astype(float) if t == "metamath" else np.ones(n)
                                                   for t in datasets}}} for label in ("Located", "Random", "W/o located")}
    halves, cross = halves_draws({d: _scores(6, i) for i, d in enumerate(datasets)}, select_cnl(3.0, "std"), (), [], 20, 0)
    rows = {c.id: c for c in claims(datasets=datasets, competent=datasets, trained=["gsm8k"], sigma=6.0, sigmas=(6.0,),
                                    halves=halves, cross=cross, kn_halves=halves, var_shares={d: 0.1 for d in datasets},
                                    erased=erased, enhanced=enhanced, epochs=(1,), n_resamples=200, seed=0)}
    # enhance: Meta_Math +50 points, unrelated (emotion, code, imdb) 0 -> +50; erase: all 0 -> gap 0; min = 0
    assert rows["CN-21"].estimate == pytest.approx(0.0) and rows["CN-21"].verdict == "contradicted"  # hi < 11
    assert rows["CN-19"].verdict == "n/a" and "one sigma" in rows["CN-19"].note
