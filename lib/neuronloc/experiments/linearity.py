"""Notebook 04: NEG §2-§4 (linearity of single neurons, NeurGrad against the measured NEG).

  factual_prompts  PARAREL facts the model answers correctly, round robin over relations (§2.1)
  on_linear        a sweep restricted to the linear range Δ in [-2, 2] (Tables 1, 2, 5)
  at_sampled       an estimator's values at the sampled neurons of every prompt (Table 2)

A *study* is the dict `neg.study` returns for one prompt; the notebook keeps one per prompt,
in prompt order, in `studies`.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch

from .. import metrics, neg
from ..models import LM
from ..tasks.loaders import Example, load_examples


def factual_prompts(lm: LM, relations: Sequence[str], n: int, scan: int, seed: int = 0) -> list[Example]:
    """Up to `n` prompts that `lm` answers correctly (`neg.answered`: single-token answer, the top
    token over the vocabulary; NEG §2.1), from the first `scan` facts (seeded order) of each
    PARAREL relation ("pararel/P103", ...), one pattern per fact (the lowest pattern index among
    them), taken round robin over the relations so that every relation contributes."""
    pools = []
    for relation in relations:
        examples = load_examples(relation, n=scan, seed=seed)
        first = min(e.meta["pattern"] for e in examples)  # one pattern per fact
        pools.append([e for e in examples if e.meta["pattern"] == first])
    kept = []
    for group in itertools.zip_longest(*pools):  # round robin over the relations
        for e in group:
            if e is not None and len(kept) < n and neg.answered(lm, e):  # stop calling the model once n are kept
                kept.append(e)
    return kept


def on_linear(sweep: torch.Tensor, full_grid: torch.Tensor, linear_grid: torch.Tensor, limit: float) -> torch.Tensor:
    """The columns of `sweep` `[neuron, D]` with |Δ| <= limit, `[neuron, D']`. A sweep was run
    either on `full_grid` (Fig. 2 prompts, Δ in [-10, 10]) or on `linear_grid` ([-2, 2]); its
    width tells which."""
    deltas = full_grid if sweep.shape[1] == len(full_grid) else linear_grid
    return metrics.in_range(deltas, sweep, limit)[1]


def at_sampled(studies: Sequence[dict], name: str) -> torch.Tensor:
    """Estimator `name` ("neurgrad", "grad", "ig": `[layer, neuron]` per study; "lpi": already
    `[n]` at the sampled neurons) at each study's sampled neurons, concatenated over the
    studies in order: `[Σ n]` float64, aligned with the rows of their sweeps."""
    return torch.cat([s[name].flatten()[s["neurons"]] if s[name].ndim == 2 else s[name] for s in studies]).double()
