"""Notebook 02, CNL §4: decoupling, compute a+b vs write Python for a+b.

  greedy_correct  whether the model's greedy output after a sub-sample's prompt is its gold
                  answer (what the attributions of §4 are about)
  top_share       the located set P_s of one sample: its top neurons at a fixed share of the
                  model (the rule fixed before the run: the paper's 0.15 %)
  claims          the rows of CN-10 and CN-11, intervals over pairs (sub-samples)
"""
from __future__ import annotations

import numpy as np
import torch

from .. import metrics
from ..claims import Claim, Estimate, measured
from ..localization.validation import answer_top1
from ..models import LM
from ..tasks import continuation_ids

PAPER_SHARE = 0.0015  # CNL §5.4: the located neurons are 0.15 % of the FFN neurons; P_s of §4 is not given


def greedy_correct(lm: LM, prompt: str, answer: str) -> bool:
    """Whether greedy decoding after `prompt` starts with `answer`, tokenized as its
    continuation (`tasks.continuation_ids`): every answer token is the top-1 token under
    teacher forcing (`answer_top1`)."""
    ids = torch.tensor(lm.tokenizer(prompt)["input_ids"])
    return answer_top1(lm, ids, torch.tensor(continuation_ids(lm.tokenizer, prompt, answer)))


def top_share(scores: torch.Tensor, share: float = PAPER_SHARE) -> list[int]:
    """Flat ids of the round(share x n) neurons of largest score (at least 1) of one sample's
    score map `[layer, neuron]`."""
    k = max(1, round(share * scores.numel()))
    return scores.flatten().topk(k).indices.tolist()


def pair_coincidences(A, B) -> np.ndarray:
    """Eq. 6 (t != t*) per pair k: |A_k n B_k| / ((|A_k| + |B_k|) / 2) (`metrics.coincidence`)."""
    return np.array([metrics.coincidence([a], [b]) for a, b in zip(A, B)], dtype=float)


def nway_excess(A, B, n: int, rows=None) -> float:
    """The smaller over the two requirements of the n-way coincidence (Eq. 6, t = t*) minus
    that of random sets of the same sizes (`metrics.chance_coincidence`), in points, over the
    samples `rows` (default all; repeated rows count once in the intersection, once per
    draw in the mean size)."""
    rows = range(len(A)) if rows is None else [int(r) for r in rows]
    out = []
    for X in (A, B):
        sets = [X[r] for r in rows]
        out.append(100 * (metrics.coincidence(sets) - metrics.chance_coincidence([len(s) for s in sets], n=n)))
    return min(out)


def claims(A, B, n_neurons: int, n_resamples: int = 2000, seed: int = 0, notes: dict | None = None,
           figures: dict | None = None) -> list[Claim]:
    """CN-10 and CN-11 from the located sets of the compute (A) and code (B) sub-samples,
    A[k] and B[k] the two sub-samples of pair k (flat neuron ids, out of n_neurons):
    CN-10 the mean per-pair coincidence (%), bootstrap over pairs; CN-11 `nway_excess`,
    bootstrap over pairs (both requirements resampled with the same pairs)."""
    notes, figures = notes or {}, figures or {}
    n = len(A)
    c10 = metrics.unit_mean_ci(100 * pair_coincidences(A, B), n_resamples=n_resamples, seed=seed)
    c11 = metrics.bootstrap_ci(lambda idx: nway_excess(A, B, n_neurons, idx), np.arange(n),
                               n_resamples=n_resamples, seed=seed)
    return [measured("CN-10", Estimate.of(c10, n, "pairs"), note=notes.get("CN-10", ""), figure=figures.get("CN-10")),
            measured("CN-11", Estimate.of(c11, n, "pairs"), note=notes.get("CN-11", ""), figure=figures.get("CN-11"))]
