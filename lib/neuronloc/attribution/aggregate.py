"""From neuron scores to neuron sets: ACE (NeuronLLM), KN count-based selection,
and CNL sigma-mask (top/bottom-k and id/mask conversions live in `neuronloc.neurons`).

Shapes: scores `[layer, neuron]`, per-example scores `[example, layer, neuron]`.
A neuron set is a bool mask `[layer, neuron]` or a 1-D LongTensor of flat ids
(`flat = layer * n_inner + index`; conversions in `neuronloc.neurons`). All functions
are pure and deterministic: ties in a ranking go to the smaller flat id (`neurons.top_k`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..configs import CNL, KN
from ..neurons import bottom_k, ids_to_mask, top_k


# ---------------------------------------------------------------- NeuronLLM ACE

@dataclass
class AceResult:
    scores: torch.Tensor     # [layer, neuron] ACE (Eq. 5), 0 for ambiguous / never-selected neurons
    good: torch.Tensor       # [<=k] flat ids, ACE descending, all ACE > 0
    bad: torch.Tensor        # [<=k] flat ids, ACE ascending (most negative first), all ACE < 0
    ambiguous: torch.Tensor  # [layer, neuron] bool: in some G_j and in some B_j


def ace(example_scores: torch.Tensor, z: int, k: int) -> AceResult:
    """Additive reordering, NeuronLLM §3.4 Eq. 4-5.

    example_scores: `[example, layer, neuron]`, ES_e of Eq. 4 (the caller has already
    summed the IG of the 3 proxies). Per example j, G_j / B_j = the top / bottom z
    neurons by ES_ej. A neuron found in some G_j and in some B_j (any examples) is
    ambiguous and scores 0; otherwise ACE(w) = sum_j 1[w in G_j u B_j] * ES_ej(w)
    (Eq. 5), so a neuron in no G_j/B_j also scores 0.
    good = top k by ACE, bad = bottom k by ACE; we drop neurons with ACE <= 0 from
    good and ACE >= 0 from bad so that no set holds a neuron of the wrong sign, so
    either set may hold fewer than k neurons.
    """
    assert example_scores.dim() == 3, f"example_scores must be [example, layer, neuron], got {tuple(example_scores.shape)}"
    E, L, N = example_scores.shape
    es = example_scores.reshape(E, L * N).double()
    z = min(z, L * N)
    order = torch.argsort(-es, dim=1, stable=True)           # per example, descending, ties by flat id
    in_good = torch.zeros_like(es, dtype=torch.bool).scatter_(1, order[:, :z], True)
    order = torch.argsort(es, dim=1, stable=True)
    in_bad = torch.zeros_like(es, dtype=torch.bool).scatter_(1, order[:, :z], True)
    ambiguous = in_good.any(0) & in_bad.any(0)
    scores = ((in_good | in_bad) * es).sum(0)                # Eq. 5
    scores[ambiguous] = 0.0
    good, bad = top_k(scores, k), bottom_k(scores, k)
    return AceResult(scores=scores.reshape(L, N).to(example_scores.dtype),
                     good=good[scores[good] > 0], bad=bad[scores[bad] < 0],
                     ambiguous=ambiguous.reshape(L, N))


def scale_z(n_neurons: int, k: int = 100, paper_z: int = 5000, paper_neurons: int = 32 * 11008) -> int:
    """Per-example set size z for a model with `n_neurons` FFN neurons in all layers.

    Rule: z keeps the paper's fraction of neurons, z = round(paper_z * n_neurons /
    paper_neurons) (round half up) with the paper's z = 5000 on LLaMA-2-7B (32 layers
    x 11008 = 352,256 neurons, i.e. 1.42 %), but at least k (so the top-k good/bad sets
    can be filled from a single example) and at most n_neurons.
    """
    z = int(paper_z * n_neurons / paper_neurons + 0.5)
    return min(max(z, k), n_neurons)


# ---------------------------------------------------------------- KN count-based selection

class Selection(NamedTuple):
    mask: torch.Tensor  # [layer, neuron] bool, the selected neurons
    ids: torch.Tensor   # [n] flat ids, ranked: most examples first, then mean score, then flat id


def kn_select(example_scores: torch.Tensor, threshold: float = KN.threshold, share: float = KN.share,
              k: int | None = None) -> Selection:
    """Knowledge-neuron refining (Dai et al. 2022 §3.2; NeuronLLM §4.3 'KN').

    example_scores: `[example, layer, neuron]`. Per example, a neuron is kept when its
    score > threshold * that example's max score (KN: t = 0.2 of the max; an example
    whose max score is <= 0 keeps nothing). A neuron is selected when it is kept in at
    least `share` of the examples (KN: 'shared by more than p % of the prompts', p
    tuned per fact; we default to half). `k` caps the selection at the k best by
    (number of examples keeping it, then mean score).
    """
    assert example_scores.dim() == 3, f"example_scores must be [example, layer, neuron], got {tuple(example_scores.shape)}"
    E, L, N = example_scores.shape
    es = example_scores.reshape(E, L * N).double()
    top = es.max(dim=1, keepdim=True).values
    kept = (es > threshold * top) & (top > 0)
    count = kept.sum(0)
    selected = count >= share * E
    # rank the selected neurons by count, then by mean score, then by id: one stable argsort
    # per key, last key first, over the selected ids only (a bootstrap calls this thousands
    # of times, and sorting all L * N neurons was most of notebook 03's interval cell)
    ids = torch.nonzero(selected).reshape(-1)
    order = ids[torch.argsort(-es.mean(0)[ids], stable=True)]
    ids = order[torch.argsort(-count[order], stable=True)][:k]
    return Selection(mask=ids_to_mask(ids, (L, N)), ids=ids)


# ---------------------------------------------------------------- CNL sigma-mask

def sigma_mask(scores: torch.Tensor, sigma: float = CNL.sigma, spread: str = CNL.spread) -> torch.Tensor:
    """CNL Eq. 8: mask = |score - mean| > sigma * spread, mean/spread over all neurons.

    scores: `[layer, neuron]` -> bool `[layer, neuron]`. spread="var" (default) is the
    variance, as Eq. 8 is written; spread="std" is the standard deviation, the usual
    meaning of 'outside sigma' and the one whose threshold does not depend on the scale
    of the scores. Both are population statistics (ddof = 0).
    """
    if spread not in ("var", "std"):
        raise ValueError(f"spread must be 'var' or 'std', got {spread!r}")
    s = scores.double()
    var = s.var(unbiased=False)
    return (s - s.mean()).abs() > sigma * (var if spread == "var" else var.sqrt())
