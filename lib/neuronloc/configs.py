"""Typed parameters: one frozen dataclass per localization method, the ROME edit and the NEG study.

    from neuronloc.configs import ACE, KN, CNL
    locate(lm, questions, KN(k=50, threshold=0.1))     # or locate(lm, questions, "kn", k=50)
    rome_edit(lm, fact, layer, subject=..., new=..., params=RomeParams(steps=50))
    neg.study(lm, question, neurons, deltas, StudyConfig(top_n=64))

Every default is declared here once; `scales`, the CLI, the notebooks and the lower-level
functions (`kn_select`, `sigma_mask`, `select_cnl`, ...) read it from here. The objects are
frozen: a variant is `dataclasses.replace(cfg, field=value)` and is recorded with the results
(`asdict`). The module imports nothing heavy, so the scales and the CLI can read it cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

SPREADS = ("var", "std")


def _positive(cls: str, **values) -> None:
    """Counts and step sizes >= 1 (None = the method's automatic choice): a clear error, no silent substitution."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{cls}: {name} must be >= 1, got {value}")


# ---------------------------------------------------------------- localization methods (`locate`)

@dataclass(frozen=True)
class ACE:
    """NeuronLLM ACE: IG of the option probability (m = `steps`), additive reordering (Eq. 3-5).

    k: good and bad neurons each (§4.4: K = 100). z: per-example set size of the
    reordering (None: the paper's 5,000 of LLaMA 2-7B's 352,256 neurons, as a share of the
    model's, `attribution.aggregate.scale_z`). steps: IG grid points (§3.1: m = 16)."""

    k: int = 100
    z: int | None = None
    steps: int = 16
    name: ClassVar[str] = "ace"

    def __post_init__(self):
        _positive(type(self).__name__, k=self.k, z=self.z, steps=self.steps)


@dataclass(frozen=True)
class TN(ACE):
    """TN 'equipped' (NeuronLLM §4.3): IG of the probability margin, additive reordering."""

    name: ClassVar[str] = "tn"


@dataclass(frozen=True)
class QRNCA(ACE):
    """QRNCA 'equipped' (NeuronLLM §4.3): IG of the answer probability, additive reordering."""

    name: ClassVar[str] = "qrnca"


@dataclass(frozen=True)
class KN:
    """Knowledge neurons (Dai et al. 2022): per example the neurons whose IG exceeds
    `threshold` x that example's maximum (KN: 0.2), kept in at least `share` of the
    examples (KN tunes p per fact; we take half), at most k of them (ranked by count, then
    mean score)."""

    k: int = 100
    threshold: float = 0.2
    share: float = 0.5
    steps: int = 16
    name: ClassVar[str] = "kn"

    def __post_init__(self):
        _positive("KN", k=self.k, steps=self.steps)
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"KN: share must be in [0, 1], got {self.share}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"KN: threshold is a share of each example's maximum score, in [0, 1]; got {self.threshold}")


@dataclass(frozen=True)
class NeurGrad:
    """NEG's NeurGrad of the answer probability, mean over examples; good = the k most
    positive, bad = the k most negative."""

    k: int = 100
    name: ClassVar[str] = "neurgrad"

    def __post_init__(self):
        _positive("NeurGrad", k=self.k)


@dataclass(frozen=True)
class ACT:
    """Mean activation over examples, the top k (NeuronLLM's ACT baseline)."""

    k: int = 100
    name: ClassVar[str] = "act"

    def __post_init__(self):
        _positive("ACT", k=self.k)


@dataclass(frozen=True)
class Random:
    """k neurons drawn uniformly from every layer with `seed` (NeuronLLM's RANDOM)."""

    k: int = 100
    seed: int = 0
    name: ClassVar[str] = "random"

    def __post_init__(self):
        _positive("Random", k=self.k)


@dataclass(frozen=True)
class CNL:
    """CNL's capability neurons: IG at every answer position (Eq. 7, `steps` = S + 1 = 20
    points), mean over the data, then the mask |score - mean| > sigma x spread (Eq. 8).

    spread "var" is the variance, as Eq. 8 is written and the reading fixed before any run
    (CNL below Eq. 8: "var(·) indicates the variance of the neurons"); "std" is the
    sensitivity reading (CLAIMS.md CN-14: with a Gaussian and σ = 6 std it keeps ~2e-9 of the
    neurons)."""

    sigma: float = 6.0
    spread: str = "var"
    steps: int = 20
    name: ClassVar[str] = "cnl"

    def __post_init__(self):
        _positive("CNL", steps=self.steps)
        if not self.sigma > 0:
            raise ValueError(f"CNL: sigma must be a positive number, got {self.sigma}")
        if self.spread not in SPREADS:
            raise ValueError(f"CNL: spread must be one of {', '.join(SPREADS)}, got {self.spread!r}")


MethodConfig = ACE | KN | NeurGrad | ACT | Random | CNL
CONFIGS: dict[str, type] = {c.name: c for c in (ACE, TN, QRNCA, KN, NeurGrad, ACT, Random, CNL)}


def method_config(method: str | MethodConfig, **options) -> MethodConfig:
    """The parameters of `method`: a config object as it is, or a method name with its
    defaults replaced by the `options` it has (None = the default).

    Options of other methods are ignored, so one call can sweep methods
    (`method_config(m, k=50, steps=8)` for every m); an option no method has is an error.
    """
    if not isinstance(method, str):
        if type(method) not in CONFIGS.values():
            raise TypeError(f"method must be a name ({', '.join(CONFIGS)}) or one of their configs, got {method!r}")
        given = {o: v for o, v in options.items() if v is not None}
        if given:
            raise TypeError(f"pass the parameters in the config ({type(method).__name__}(...)), not as "
                            f"options too: {', '.join(given)}")
        return method
    if method not in CONFIGS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(CONFIGS)}")
    known = {f.name for c in CONFIGS.values() for f in fields(c)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}: the methods' parameters are {', '.join(sorted(known))}")
    cls = CONFIGS[method]
    own = {f.name for f in fields(cls)}
    return replace(cls(), **{o: v for o, v in options.items() if o in own and v is not None})


# ---------------------------------------------------------------- ROME (`rome_edit`)

@dataclass(frozen=True)
class RomeParams:
    """ROME's value optimisation and update (Meng et al. 2022, their GPT-J hyperparameters):
    `steps` Adam steps of `lr` on delta, the essence KL weight, the weight decay on
    |delta|^2 / |v0|^2, |delta| clamped to clamp x |v0|, and the ridge added to the key second
    moment (x its mean diagonal) before the solve."""

    steps: int = 25
    lr: float = 0.5
    kl_weight: float = 0.0625
    weight_decay: float = 0.5
    clamp: float = 4.0
    ridge: float = 1e-3

    def __post_init__(self):
        _positive("RomeParams", steps=self.steps)
        if not (self.lr > 0 and self.clamp > 0 and self.kl_weight >= 0 and self.weight_decay >= 0 and self.ridge >= 0):
            raise ValueError(f"RomeParams: lr and clamp must be > 0, kl_weight, weight_decay and ridge >= 0; got {self}")


# ---------------------------------------------------------------- NEG (`neg.study`)

@dataclass(frozen=True)
class StudyConfig:
    """What `neg.study` measures on one prompt beyond the sampled neurons' sweep (NEG §2-§4).

    top_n: the largest-|NeurGrad| neurons swept on `top_deltas` (App. A Tab. 5; None = the
    study's deltas). top_k / top_k_steps: top-K neurons of each estimator shifted along
    their polarity by each step (Fig. 3). multi_sizes / multi_steps: N random neurons
    (seeded) shifted together, {range limit: steps} (Fig. 5, Fig. 14; None = not run).
    ig_steps: IG points of the Table 2 baseline (rule "linspace", Dai et al.'s m = 20).
    rows: (neuron, delta) rows per batched forward of the sweeps (memory, not results)."""

    top_n: int = 100
    top_deltas: tuple[float, ...] | None = None
    top_k: tuple[int, ...] = (1, 4, 16)
    top_k_steps: tuple[float, ...] = (0.1, 0.5, 1.0)
    multi_sizes: tuple[int, ...] = (1, 4, 16)
    multi_steps: tuple[tuple[float, tuple[float, ...]], ...] | None = None
    ig_steps: int = 20
    seed: int = 0
    rows: int = 128

    def __post_init__(self):
        _positive("StudyConfig", top_n=self.top_n, ig_steps=self.ig_steps, rows=self.rows)
        _positive("StudyConfig", **{f"top_k[{i}]": k for i, k in enumerate(self.top_k)},
                  **{f"multi_sizes[{i}]": n for i, n in enumerate(self.multi_sizes)})


__all__ = ["ACE", "TN", "QRNCA", "KN", "NeurGrad", "ACT", "Random", "CNL", "CONFIGS", "MethodConfig",
           "method_config", "RomeParams", "StudyConfig"]
