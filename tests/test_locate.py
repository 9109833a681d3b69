"""Task-level localization: per-question scores aggregate as the papers define,
and a rerun is served from the on-disk cache."""
from __future__ import annotations

import pytest
import torch

import neuronloc as nl
from neuronloc.attribution import attribute
from neuronloc.attribution.aggregate import ace, sigma_mask
from neuronloc.localization import locate
from neuronloc.store import Store

from conftest import tiny_llama


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(seed=2)


@pytest.fixture(scope="module")
def proxies():
    base = nl.Task("toy", [nl.MCQuestion(stem=f"What is {a}+{a}?", options=("2", "4", "6", "8"), answer=a - 1, uid=f"q{a}")
                           for a in (1, 2)])
    return nl.qatt(base, n_proxies=3, seed=0).questions


def test_ace_sums_proxies_then_reorders(lm, proxies):
    """NeuronLLM Eq. 4-5: ES_e = sum of the 3 proxies' IG, then additive reordering."""
    got = locate(lm, proxies, "ace", k=5, z=10, steps=3, progress=False)
    per_q = torch.stack([attribute("ig", lm, q, target="option_prob", steps=3).scores for q in proxies])
    es = torch.stack([per_q[:3].sum(0), per_q[3:].sum(0)])
    ref = ace(es, z=10, k=5)
    assert torch.allclose(got.scores, ref.scores, rtol=1e-5, atol=1e-12)
    assert torch.equal(got.good, ref.good) and torch.equal(got.bad, ref.bad)
    assert got.example_scores.shape == (2, 3, 48)


def test_methods_differ_in_target(lm, proxies):
    """TN and QRNCA use their own targets (prob margin, vocabulary probability)."""
    tn = locate(lm, proxies, "tn", k=5, z=10, steps=2, progress=False)
    qrnca = locate(lm, proxies, "qrnca", k=5, z=10, steps=2, progress=False)
    assert not torch.allclose(tn.example_scores, qrnca.example_scores)
    assert len(locate(lm, proxies, "kn", k=5, steps=2, progress=False).bad) == 0


def test_cnl_sigma_mask_on_free_form_examples(lm):
    """CNL: mean over examples of the multi-position IG, then the sigma-mask."""
    from neuronloc.tasks.loaders import Example
    examples = [Example("One and one make", "two", "a"), Example("Two and two make", "four", "b")]
    got = locate(lm, examples, "cnl", sigma=1.0, spread="std", steps=4, progress=False)
    mean = torch.stack([attribute("ig_positions", lm, e, steps=4).scores for e in examples]).mean(0)
    assert torch.allclose(got.scores, mean, rtol=1e-5, atol=1e-12)
    mask = sigma_mask(mean, 1.0, "std")
    assert set(got.good.tolist()) == set(torch.nonzero(mask.flatten())[:, 0].tolist())


def test_rerun_hits_the_cache(lm, proxies, tmp_path, monkeypatch):
    """The second run computes nothing: every per-question score comes from disk."""
    store = Store(tmp_path)
    first = locate(lm, proxies, "neurgrad", k=5, store=store, progress=False)
    import neuronloc.localization.methods as mod
    monkeypatch.setattr(mod, "attribute", lambda *a, **k: pytest.fail("recomputed a cached score"))
    again = locate(lm, proxies, "neurgrad", k=5, store=store, progress=False)
    assert torch.equal(first.scores, again.scores)


def test_unknown_method_is_a_clear_error(lm, proxies):
    with pytest.raises(ValueError, match="unknown method 'foo'.*ace"):
        locate(lm, proxies, "foo")


@pytest.mark.parametrize("method, kind", [("cnl", "mc"), ("ace", "free"), ("tn", "free")])
def test_method_rejects_the_wrong_kind_of_data(lm, proxies, method, kind):
    """cnl needs free-form examples; option targets need multiple-choice questions."""
    from neuronloc.tasks.loaders import Example
    data = proxies if kind == "mc" else [Example("One and one make", "two", "a")]
    with pytest.raises(ValueError, match="free-form" if method == "cnl" else "multiple-choice"):
        locate(lm, data, method, progress=False)


@pytest.mark.parametrize("params, match", [({"k": -5}, "k must be >= 1"), ({"k": 0}, "k must be >= 1"),
                                           ({"z": 0}, "z must be >= 1"), ({"steps": 0}, "steps must be >= 1")])
def test_bad_sizes_are_errors(lm, proxies, params, match):
    """No silent substitution: a non-positive k, z or steps is an error (issue: locate(k=-5) gave 46,075 neurons)."""
    with pytest.raises(ValueError, match=match):
        locate(lm, proxies, "ace", progress=False, **params)


def test_no_questions_is_a_clear_error(lm):
    with pytest.raises(ValueError, match="no questions"):
        locate(lm, [], "ace", progress=False)


def test_readout_reaches_the_scorer(lm, proxies):
    """locate(readout=...) scores with that read-out: same as the questions carrying it."""
    from dataclasses import replace
    cloze = [replace(q, options=("two", "four", "six", "eight"), readout="cloze") for q in proxies]
    letters = [replace(q, options=("two", "four", "six", "eight")) for q in proxies]
    got = locate(lm, letters, "qrnca", k=5, z=10, steps=2, progress=False, readout="cloze")
    ref = locate(lm, cloze, "qrnca", k=5, z=10, steps=2, progress=False)
    assert torch.allclose(got.scores, ref.scores, rtol=1e-6, atol=1e-12)
    assert got.params["readout"] == "cloze"
