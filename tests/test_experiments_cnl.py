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
