"""Typed parameters (`neuronloc.configs`): one default per parameter, declared once and read
everywhere; a config object and a method name with options locate the same neurons."""
from __future__ import annotations

import inspect
from dataclasses import FrozenInstanceError, asdict, fields

import pytest
import torch

import neuronloc as nl
from neuronloc import configs, scales
from neuronloc.attribution.aggregate import kn_select, sigma_mask
from neuronloc.configs import ACE, CNL, KN, QRNCA, TN, NeurGrad, Random, RomeParams, StudyConfig, method_config
from neuronloc.localization import METHODS, commonality, locate, rome_edit
from neuronloc.neg import study

from conftest import tiny_llama


def _default(fn, name):
    return inspect.signature(fn).parameters[name].default


def test_every_method_has_a_config_of_its_name():
    assert set(configs.CONFIGS) == set(METHODS)
    assert all(configs.CONFIGS[name].name == name for name in METHODS)
    assert TN().steps == ACE().steps == QRNCA().steps == 16 and CNL().steps == 20


def test_defaults_are_read_from_the_configs():
    """sigma, the KN threshold and share, IG steps and K: the lower-level functions, the
    scales and the CLI take them from `configs`, so changing one there changes them all."""
    assert _default(sigma_mask, "sigma") == CNL.sigma == 6.0 and _default(sigma_mask, "spread") == CNL.spread == "var"
    assert _default(kn_select, "threshold") == KN.threshold == 0.2 and _default(kn_select, "share") == KN.share
    assert _default(commonality.select_cnl, "sigma") == CNL.sigma
    assert _default(commonality.select_kn, "threshold") == KN.threshold
    paper = scales.PAPER
    assert paper.cnl.sigma == CNL.sigma and paper.cnl.ig_steps + 1 == CNL.steps
    assert paper.neuronllm.ig_steps == ACE.steps and paper.neuronllm.k == ACE.k == paper.cross.k
    assert paper.neg.ig_steps == StudyConfig.ig_steps
    from neuronloc.cli import _parser
    args = _parser().parse_args(["attribute", "--task", "neuronllm/sentiment"])
    assert (args.sigma, args.spread, args.k) == (CNL.sigma, CNL.spread, ACE.k)


def test_scale_method_objects():
    assert scales.PAPER.cnl.method() == CNL()
    assert scales.DEFAULT.cnl.method(sigma=3.0, spread="std") == CNL(sigma=3.0, spread="std", steps=20)
    smoke = scales.SMOKE.cross
    assert smoke.method("kn") == KN(k=smoke.k, steps=smoke.ig_steps)
    assert smoke.method("random", seed=3) == Random(k=smoke.k, seed=3)
    assert scales.PAPER.cross.method("ace") == ACE()  # ig_steps None: the method's own


def test_method_config_options():
    assert method_config("kn", k=50, threshold=0.1) == KN(k=50, threshold=0.1)
    assert method_config("ace", k=50, steps=None) == ACE(k=50)            # None = the default
    assert method_config("neurgrad", k=7, steps=8, sigma=3.0) == NeurGrad(k=7)  # other methods' options ignored
    cfg = CNL(sigma=3.0)
    assert method_config(cfg) is cfg and method_config(cfg, k=None) is cfg
    with pytest.raises(TypeError, match="unknown option.*kn_thresold"):
        method_config("kn", kn_thresold=0.1)
    with pytest.raises(TypeError, match="not as options too: k"):
        method_config(KN(), k=5)
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        method_config("foo")


@pytest.mark.parametrize("make, match", [
    (lambda: ACE(k=0), "ACE: k must be >= 1, got 0"), (lambda: TN(z=0), "TN: z must be >= 1"),
    (lambda: KN(share=1.5), "share must be in"), (lambda: KN(threshold=2.0), "threshold is a share"),
    (lambda: CNL(sigma=0.0), "sigma must be a positive"), (lambda: CNL(spread="mad"), "spread must be one of var, std"),
    (lambda: RomeParams(lr=0.0), "lr and clamp must be > 0"), (lambda: StudyConfig(top_k=(1, 0)), r"top_k\[1\] must be >= 1"),
])
def test_bad_parameters_are_one_line_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_configs_are_frozen_and_recorded():
    cfg = KN(k=5)
    with pytest.raises(FrozenInstanceError):
        cfg.k = 6
    assert asdict(cfg) == {"k": 5, "threshold": 0.2, "share": 0.5, "steps": 16}
    assert [f.name for f in fields(RomeParams)] == ["steps", "lr", "kl_weight", "weight_decay", "clamp", "ridge"]


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(seed=2)


@pytest.fixture(scope="module")
def proxies():
    base = nl.Task("toy", [nl.MCQuestion(stem=f"What is {a}+{a}?", options=("2", "4", "6", "8"), answer=a - 1, uid=f"q{a}")
                           for a in (1, 2, 3)])
    return nl.qatt(base, n_proxies=2, seed=0).questions


@pytest.mark.parametrize("cfg", [ACE(k=5, z=10, steps=3), KN(k=5, threshold=0.1, share=0.3, steps=3),
                                 NeurGrad(k=4), Random(k=6, seed=3)])
def test_locate_with_a_config_equals_the_name_with_options(lm, proxies, cfg):
    by_config = locate(lm, proxies, cfg, progress=False)
    by_name = locate(lm, proxies, cfg.name, progress=False, **asdict(cfg))
    assert torch.equal(by_config.good, by_name.good) and torch.equal(by_config.bad, by_name.bad)
    assert torch.equal(by_config.scores, by_name.scores)
    assert by_config.config == cfg and by_config.method == cfg.name
    assert {f: by_config.params[f] for f in asdict(cfg) if f != "z"} == {f: v for f, v in asdict(cfg).items() if f != "z"}


def test_locate_config_changes_the_selection(lm, proxies):
    """The config's fields reach the aggregation: a lower KN threshold keeps at least as many neurons."""
    strict = locate(lm, proxies, KN(k=1000, threshold=0.9, share=0.5, steps=3), progress=False)
    loose = locate(lm, proxies, KN(k=1000, threshold=0.05, share=0.5, steps=3), progress=False)
    ref = kn_select(loose.example_scores, 0.05, 0.5, 1000)
    assert torch.equal(loose.good, ref.ids) and len(loose.good) > len(strict.good)


def test_rome_params_equal_keyword_overrides():
    """rome_edit(params=RomeParams(...)) and the same fields as keywords make the same edit."""
    lm = tiny_llama(seed=1)
    texts = ["Music by Toko is played on the piano.", "Toko plays music every day."] * 4
    p = RomeParams(steps=3, lr=0.1, clamp=1e4, weight_decay=0.0)
    a = rome_edit(lm, "Music by Toko", 1, subject="Toko", new="piano", corpus=texts, params=p)
    b = rome_edit(lm, "Music by Toko", 1, subject="Toko", new="piano", corpus=texts, steps=3, lr=0.1, clamp=1e4,
                  weight_decay=0.0)
    c = rome_edit(lm, "Music by Toko", 1, subject="Toko", new="piano", corpus=texts, params=p, steps=1)
    assert torch.equal(a.value, b.value) and not torch.equal(a.value, c.value)
    assert a.params["steps"] == 3 and c.params["steps"] == 1 and a.params["lr"] == 0.1
