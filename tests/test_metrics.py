"""Metrics on hand-worked numbers (neuronloc.metrics)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from neuronloc.metrics import (accuracy, coincidence, comprehension, coverage, distribution, format_cell, mean_ci,
                               generality, iou, linear_ratio, mae, neg_slope, neuron_fraction, overlap,
                               pearson_r, polarity, rac, rcc, relative_change)


def test_accuracy_and_comprehension():
    assert accuracy([True, False, True, True]) == 0.75
    # 3 examples x 3 proxies: right counts 2, 1, 3 -> examples 0 and 2 understood
    correct = [1, 1, 0, 1, 0, 0, 1, 1, 1]
    ids = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert comprehension(correct, ids) == pytest.approx(2 / 3)
    assert comprehension(correct, ids, min_correct=3) == pytest.approx(1 / 3)


def test_relative_change_and_fail():
    c = relative_change(0.6, 0.3, "down")                            # |0.6 - 0.3| / 0.6 = 50 %
    assert c.value == pytest.approx(50.0) and not c.fail
    assert relative_change(0.6, 0.7, "down").fail                    # Deg that raised accuracy
    c = relative_change(0.5, 0.6, "up")                              # 0.1 / 0.5 = 20 %
    assert c.value == pytest.approx(20.0) and not c.fail
    assert relative_change(0.5, 0.4, "up").fail                      # Enh that lowered accuracy
    c = relative_change(0.5, 0.5, "down")
    assert c.value == 0.0 and not c.fail and str(c) == "0.0"
    assert math.isnan(relative_change(0.0, 0.2, "up").value)         # undefined relative change
    with pytest.raises(ValueError):
        relative_change(0.5, 0.4, "deg")


def test_format_cell():
    # RAC = 0.40 / 0.75 = 53.33 %, RCC = 0.32 / 0.50 = 64 %
    assert format_cell(rac(0.75, 0.35, "down"), rcc(0.5, 0.18, "down")) == "53.3/64.0"
    assert format_cell(rac(0.75, 0.35, "down"), rcc(0.5, 0.6, "down")) == "Fail"
    assert format_cell(rac(0.5, 0.4, "up"), rcc(0.5, 0.6, "up")) == "Fail"
    assert str(rac(0.5, 0.4, "up")) == "Fail"


def test_overlap_iou_fraction():
    # a = {1, 2, 3, 4}, b = {3, 4, 5}: |a n b| = 2, |a u b| = 5
    # overlap = (2/4 + 2/3) / 2 = 7/12, IoU = 2/5
    a, b = {1, 2, 3, 4}, {3, 4, 5}
    assert overlap(a, b) == pytest.approx(7 / 12)
    assert iou(a, b) == pytest.approx(0.4)
    ma = torch.tensor([[False, True, True], [True, True, False]])   # flat ids {1, 2, 3, 4}
    mb = torch.tensor([[False, False, False], [True, True, True]])  # flat ids {3, 4, 5}
    assert overlap(ma, mb) == pytest.approx(7 / 12)
    assert iou(ma, torch.tensor([3, 4, 5])) == pytest.approx(0.4)
    assert neuron_fraction(ma) == pytest.approx(4 / 6)
    assert math.isnan(overlap(set(), b)) and math.isnan(iou(set(), set()))


def test_coincidence():
    # pairs: ({1,2}, {2,3}) -> 2*1/4 = 0.5; ({1,2,3}, {4}) -> 0 ; mean 0.25
    assert coincidence([{1, 2}, {1, 2, 3}], [{2, 3}, {4}]) == pytest.approx(0.25)
    # all of one subsample: n = {2, 3} (size 2), mean size (3 + 3 + 2) / 3 = 8/3 -> 0.75
    assert coincidence([{1, 2, 3}, {2, 3, 4}, {2, 3}]) == pytest.approx(0.75)
    assert coincidence([{1, 2}, {1, 2}]) == 1.0


def test_neg_slope_exact_and_noisy():
    deltas = torch.linspace(-2, 2, 9)
    assert neg_slope(deltas, 3 * deltas).item() == pytest.approx(3.0)
    rng = np.random.default_rng(0)
    x = np.linspace(-2, 2, 21)
    y = np.stack([0.7 * x + rng.normal(0, 0.3, x.size), -1.5 * x + 0.2 + rng.normal(0, 0.1, x.size)])  # [2, D]
    ref = [np.linalg.lstsq(x[:, None], row, rcond=None)[0][0] for row in y]  # zero-intercept fit
    got = neg_slope(x, y)
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx(ref, rel=1e-12)


def test_pearson_vs_scipy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 10))
    y = 0.5 * x + rng.normal(size=(4, 10))
    y[3] = -2 * x[3] + 1                                             # exact negative line
    ref = [stats.pearsonr(a, b).statistic for a, b in zip(x, y)]
    assert pearson_r(x, y).tolist() == pytest.approx(ref, abs=1e-12)
    assert pearson_r(x[3], y[3]).item() == pytest.approx(-1.0, abs=1e-12)
    d = np.linspace(-2, 2, 5)                                        # broadcast one Δ grid over rows
    assert pearson_r(d, np.stack([2 * d, d ** 2])).tolist() == pytest.approx([1.0, 0.0], abs=1e-12)
    assert math.isnan(pearson_r([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).item())   # constant input


def test_mae_linear_ratio_polarity():
    assert mae([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]) == pytest.approx(1.0)   # (1 + 0 + 2) / 3
    assert linear_ratio([0.99, -0.97, 0.5, float("nan")]) == 0.5        # |r| >= 0.95: 2 of 4
    assert polarity([0.2, -0.1, 0.0]).tolist() == [1, -1, -1]


def test_generality():
    # counts [3, 1, 0, 0]: coverage 2/4 = 0.5
    # mean 1, Var = (4 + 0 + 1 + 1) / 4 = 1.5; maxVar = counts [4, 0, 0, 0] -> (9 + 1 + 1 + 1) / 4 = 3
    # distribution = 1 - 1.5 / 3 = 0.5 -> generality 0.25
    assert coverage([True, True, False, False]) == 0.5
    assert distribution([3, 1, 0, 0]) == pytest.approx(0.5)
    assert generality([3, 1, 0, 0]) == pytest.approx(0.25)
    assert generality([3, 1, 0, 0], present=[1, 1, 1, 0]) == pytest.approx(0.375)
    assert generality([2, 2, 2, 2]) == 1.0                          # full coverage, even spread
    assert generality([8, 0, 0, 0]) == 0.0                          # all in one bin
    assert generality([0, 0, 0]) == 0.0                             # no linear neuron anywhere


def test_change_ci_by_hand():
    """Signed RAC / RCC of a hand-made case; the interval holds the value, resamples whole
    examples (a constant change per example gives a zero-width interval) and is seeded."""
    from neuronloc.metrics import change_ci, relative_change
    # 4 examples x 3 proxies; base: 2, 3, 1, 2 right (acc 8/12, com 3/4); edited: 1, 3, 0, 2 (acc 6/12, com 2/4)
    ids = [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    base = [1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0, 1]
    edited = [1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    v, lo, hi = change_ci(base, edited, ids, "acc", n_resamples=500)
    assert v == pytest.approx(100 * (6 - 8) / 8)
    assert v == pytest.approx(-relative_change(8 / 12, 6 / 12, "down").value)
    assert lo <= v <= hi and lo < hi
    assert change_ci(base, edited, ids, "acc", n_resamples=500) == (v, lo, hi)  # seeded
    c, _, _ = change_ci(base, edited, ids, "com", n_resamples=200)
    assert c == pytest.approx(100 * (2 / 4 - 3 / 4) / (3 / 4))
    # every example loses exactly one right proxy of its 2: the change is -50 % in every resample
    same = change_ci([1, 1, 0] * 4, [1, 0, 0] * 4, ids, "acc", n_resamples=200)
    assert same[0] == pytest.approx(-50) and same[1] == pytest.approx(-50) and same[2] == pytest.approx(-50)
    assert math.isnan(change_ci([0] * 12, [1] * 12, ids)[0])


def test_cumulative_and_top_share_hand_worked():
    from neuronloc.metrics import cumulative_share, top_share
    values = torch.tensor([[1.0, -4.0], [0.0, 5.0]])  # |v| sorted: 5, 4, 1, 0; total 10
    assert torch.allclose(cumulative_share(values), torch.tensor([0.5, 0.9, 1.0, 1.0], dtype=torch.float64))
    assert top_share(values, 0.25) == pytest.approx(0.5) and top_share(values, 0.5) == pytest.approx(0.9)
    assert top_share(values, 0.01) == pytest.approx(0.5)  # at least one entry


def test_sign_agreement_skips_zeros():
    from neuronloc.metrics import sign_agreement
    assert sign_agreement([1, -2, 3, 0, 5], [2, 2, 1, 7, 0]) == pytest.approx(2 / 3)
    assert math.isnan(sign_agreement([0, 0], [1, 1]))


def test_mean_ci_normal_theory_and_edge_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    mean, low, high = mean_ci(x, n_resamples=2000, seed=1)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))  # normal-theory half width, what the bootstrap approximates
    assert mean == pytest.approx(x.mean())
    assert low < mean < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert mean_ci(np.append(x, [np.nan, np.inf]), n_resamples=2000, seed=1) == (mean, low, high)
    bca = mean_ci(x, n_resamples=2000, seed=1, method="BCa")
    assert bca[1] < mean < bca[2]
    assert mean_ci([2.0, 2.0, 2.0])[0] == 2.0 and np.isnan(mean_ci([2.0, 2.0])[1])
    assert np.isnan(mean_ci([5.0])[2]) and np.isnan(mean_ci([np.nan])[0])


# ---------------------------------------------------------------- intervals that decide verdicts

def test_bootstrap_ci_of_a_mean_matches_the_normal_interval():
    from neuronloc.metrics import unit_mean_ci
    x = np.random.default_rng(1).normal(3.0, 2.0, 400)
    value, lo, hi = unit_mean_ci(x, n_resamples=4000)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))  # the textbook interval of a mean
    assert value == pytest.approx(x.mean())
    assert lo == pytest.approx(x.mean() - half, abs=0.1 * half) and hi == pytest.approx(x.mean() + half, abs=0.1 * half)
    assert unit_mean_ci(x, n_resamples=500) == unit_mean_ci(x, n_resamples=500)  # seeded


def test_bootstrap_ci_keeps_the_rows_of_one_unit_together():
    from neuronloc.metrics import unit_mean_ci
    per_prompt = np.random.default_rng(2).normal(0.0, 1.0, 40)
    rows, units = np.repeat(per_prompt, 16), np.repeat(np.arange(40), 16)  # 16 neurons of one prompt move together
    _, lo_u, hi_u = unit_mean_ci(rows, units=units, n_resamples=3000)
    _, lo_p, hi_p = unit_mean_ci(per_prompt, n_resamples=3000)
    _, lo_r, hi_r = unit_mean_ci(rows, n_resamples=3000)
    assert hi_u - lo_u == pytest.approx(hi_p - lo_p, rel=0.15)  # resampling prompts = the per-prompt interval
    assert (hi_r - lo_r) == pytest.approx((hi_p - lo_p) / 4, rel=0.2)  # rows as units: sqrt(16) too narrow


def test_diff_ci_is_paired_and_a_constant_shift_has_zero_width():
    from neuronloc.metrics import bootstrap_ci, diff_ci
    a = np.random.default_rng(3).normal(0.0, 5.0, 100)
    assert diff_ci(a + 1.0, a) == pytest.approx((1.0, 1.0, 1.0))  # every resample differs by exactly 1
    v, lo, hi = bootstrap_ci(np.mean, np.full(30, 0.6))
    assert v == lo == hi == pytest.approx(0.6)  # constant answers: an interval of zero width
    v, lo, hi = bootstrap_ci(np.mean, [1.0])
    assert v == 1.0 and math.isnan(lo) and math.isnan(hi)  # one unit: no interval
    with pytest.raises(ValueError, match="same rows"):
        diff_ci(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="units"):
        bootstrap_ci(np.mean, np.zeros(4), units=[0, 1])


def test_bootstrap_ci_resamples_seeds_as_a_second_level():
    from neuronloc.metrics import diff_ci
    q = np.random.default_rng(4).normal(0.0, 1.0, 60)
    method = q + 2.0
    one_seed = np.stack([q])
    offsets = np.array([-1.0, 0.0, 1.0, -0.5, 0.5])[:, None]
    seeds = q[None, :] + offsets  # random baselines that differ by seed
    _, lo1, hi1 = diff_ci(method, one_seed)
    _, lo5, hi5 = diff_ci(method, seeds)
    assert (lo1, hi1) == pytest.approx((2.0, 2.0))  # paired rows and one seed: no spread left
    assert hi5 - lo5 > 0.5  # the spread of the seeds enters the interval
    with pytest.raises(ValueError, match="seeds"):
        diff_ci(np.zeros((2, 3)), np.zeros((3, 3)))


def test_repeated_ratio_interleaves_and_averages(monkeypatch):
    import time
    from neuronloc.metrics import repeated_ratio
    clock, calls = [0.0], []
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def run(name, seconds):
        def fn():
            calls.append(name)
            clock[0] += seconds.pop(0)
        return fn
    a = run("a", [9.0, 3.0, 4.0, 6.0, 2.0, 3.0])  # warm-up first
    b = run("b", [9.0, 1.0, 1.0, 2.0, 1.0, 1.0])
    mean, lo, hi, ratios = repeated_ratio(a, b, repetitions=5, warmup=1)
    assert calls == ["a", "b"] * 6 and ratios == [3.0, 4.0, 3.0, 2.0, 3.0]
    assert mean == pytest.approx(3.0) and 2.0 <= lo <= 3.0 <= hi <= 4.0
    # rounds: per repetition the smallest a over the smallest b (a slow round, e.g. under load, drops out)
    calls.clear()
    a = run("a", [1.0, 3.0, 9.0, 4.0, 4.0])
    b = run("b", [1.0, 5.0, 1.0, 2.0, 1.0])
    mean, lo, hi, ratios = repeated_ratio(a, b, repetitions=2, warmup=1, rounds=2)
    assert calls == ["a", "b"] * 5 and ratios == [3.0, 4.0]  # min(3, 9) / min(5, 1); min(4, 4) / min(2, 1)


def test_collapse_share_and_flag():
    from neuronloc.metrics import collapse_share, collapsed
    assert collapse_share(["neg"] * 9 + ["pos"]) == 0.9 and math.isnan(collapse_share([]))
    assert collapsed(["neg"] * 9 + ["pos"], ["neg", "pos"] * 5)  # 90 % one label where the base answered 50 %
    assert not collapsed(["neg"] * 8 + ["pos"] * 2, ["neg", "pos"] * 5)
    assert not collapsed(["neg"] * 10, ["neg"] * 10)  # the unedited model already answered one label
