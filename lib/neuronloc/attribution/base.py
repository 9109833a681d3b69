"""What every scorer shares: the result type and the registry.

A scorer is `fn(lm, question, target="...", **params) -> NeuronScores` and is
registered by name, so notebooks and the CLI pick methods by name (cf. Captum).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..models import LM
from ..neurons import bottom_k, top_k


@dataclass
class NeuronScores:
    """Scores of every neuron: `scores` is `[layer, neuron]` (float32, CPU).

    Layers that a scorer skipped (`layers=` parameter) hold NaN.
    """

    scores: torch.Tensor
    method: str
    site: str
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        assert self.scores.ndim == 2, f"scores must be [layer, neuron], got {tuple(self.scores.shape)}"

    @property
    def n_layers(self) -> int:
        return self.scores.shape[0]

    @property
    def n_inner(self) -> int:
        return self.scores.shape[1]

    def top(self, k: int, largest: bool = True) -> torch.Tensor:
        """Flat ids (layer * n_inner + index) of the k highest (or lowest) scores;
        ties go to the smaller flat id, NaN (skipped layers) ranks last."""
        return top_k(self.scores, k) if largest else bottom_k(self.scores, k)


# ----------------------------------------------------------------------- registry

SCORERS: dict[str, Callable[..., NeuronScores]] = {}


def register(name: str):
    def deco(fn):
        SCORERS[name] = fn
        return fn
    return deco


def attribute(method: str, lm: LM, question, target: str = "answer_prob", **params) -> NeuronScores:
    """Run the scorer registered as `method` (see `SCORERS`)."""
    if method not in SCORERS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(sorted(SCORERS))}")
    return SCORERS[method](lm, question, target=target, **params)
