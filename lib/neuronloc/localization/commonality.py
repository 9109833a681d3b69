"""CNL §5.3: the commonality neurons of a data set and how well two halves agree on them.

From per-example CNL scores `[example, layer, neuron]` (Eq. 7 per example, `locate(...,
"cnl").example_scores`), with no further model calls:
  select_cnl        the sigma-mask of the mean score (Eq. 8; spread "var" as written, or "std")
  select_kn         KN's count-based refining of the same scores (Table 4's KN row, same protocol)
  half_agreement    Table 1: overlap, IoU and neuron share of the masks of two disjoint halves
  convergence       Fig. 6: that agreement as the data grows, over random splits
  chance_overlap    the overlap two random sets of the same sizes have on average
and `answer_queries`, the examples as token ids with the answer cut to a token budget
(Eq. 7 costs one IG per answer token).
A data set's examples are split at random (seeded) into halves a and b; a selection
maps the scores of a subset to a bool mask `[layer, neuron]`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..attribution.aggregate import kn_select, sigma_mask
from ..configs import CNL, KN
from ..engine import Query, make_query
from ..metrics import iou, neuron_fraction, overlap, random_overlap

Selection = Callable[[torch.Tensor], torch.Tensor]  # [example, layer, neuron] scores -> bool [layer, neuron]


def answer_queries(lm, examples, max_answer_tokens: int | None = None) -> list[Query]:
    """Free-form examples tokenized (`make_query`), each answer cut to its first
    `max_answer_tokens` tokens (None: whole); Eq. 7 then averages over those tokens."""
    if max_answer_tokens is not None and max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1 or None, got {max_answer_tokens}")
    out = []
    for example in examples:
        query = make_query(lm, example)
        answer = query.continuations[0][:max_answer_tokens]
        out.append(Query(query.prompt, (answer,), 0, "cloze", uid=query.uid))
    return out


def select_cnl(sigma: float = CNL.sigma, spread: str = CNL.spread) -> Selection:
    """CNL Eq. 8 on the mean over examples (Eq. 7's expectation over the data set)."""
    return lambda example_scores: sigma_mask(example_scores.mean(0), sigma, spread)


def select_kn(threshold: float = KN.threshold, share: float = KN.share) -> Selection:
    """KN (Dai et al. 2022): per example the neurons above `threshold` x its max score,
    kept in at least `share` of the examples (`kn_select`)."""
    return lambda example_scores: kn_select(example_scores, threshold, share).mask


def chance_overlap(n_a: int, n_b: int, n: int) -> float:
    """Expected Eq. 9 overlap of two independent uniformly random sets of n_a and n_b of n
    neurons (`metrics.random_overlap`: (n_a + n_b) / (2 n)); nan where a set is empty (a
    half whose mask holds no neuron), where random_overlap refuses."""
    if not (0 < n_a <= n and 0 < n_b <= n):
        return float("nan")
    return random_overlap(n_a, n_b, n)


def split_halves(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split of examples 0..n-1 into halves a (n // 2) and b (the rest)."""
    if n < 2:
        raise ValueError(f"splitting into two halves needs at least 2 examples, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[: n // 2].sort().values, order[n // 2:].sort().values


@dataclass(frozen=True)
class Agreement:
    """Table 1 for one data set: Eq. 9 overlap and IoU of the masks of halves a and b, the
    neuron share of each half's mask and of the whole data set's, and chance_overlap."""

    overlap: float
    iou: float
    share_a: float
    share_b: float
    share: float
    chance: float
    n_a: int
    n_b: int


def half_agreement(example_scores: torch.Tensor, select: Selection, seed: int = 0) -> Agreement:
    """Table 1: split the examples into random halves (`split_halves(seed)`), select on each."""
    assert example_scores.dim() == 3, f"example_scores must be [example, layer, neuron], got {tuple(example_scores.shape)}"
    a, b = split_halves(len(example_scores), seed)
    mask_a, mask_b = select(example_scores[a]), select(example_scores[b])
    n = mask_a.numel()
    return Agreement(overlap(mask_a, mask_b), iou(mask_a, mask_b), neuron_fraction(mask_a), neuron_fraction(mask_b),
                     neuron_fraction(select(example_scores)),
                     chance_overlap(int(mask_a.sum()), int(mask_b.sum()), n), len(a), len(b))


def convergence(example_scores: torch.Tensor, sizes, select: Selection, n_splits: int = 10,
                seed: int = 0) -> list[dict]:
    """Fig. 6: for each data size s, n_splits times: draw s examples, split them into halves,
    record the halves' agreement. Rows {"size", "split", "overlap", "iou", "chance"}."""
    n = len(example_scores)
    rows = []
    for size in sizes:
        if not 2 <= size <= n:
            raise ValueError(f"data size {size} must be between 2 and the {n} examples scored")
        for split in range(n_splits):
            g = torch.Generator().manual_seed(seed * 100_003 + size * 1009 + split)
            subset = torch.randperm(n, generator=g)[:size]
            agree = half_agreement(example_scores[subset], select, seed=seed + split)
            rows.append({"size": size, "split": split, "overlap": agree.overlap, "iou": agree.iou,
                         "chance": agree.chance})
    return rows
