"""Notebook 03, CNL §5: erase (Table 3), enhance (Table 2), IPP (Table 4) and the claim rules.

  interval      bootstrap interval of a mean, for Table 1's split overlaps and Table 3's paired diffs
  correct       per question 1/0 with FFN neurons' weights zeroed (§5.4 'Erase')
  random_draws  the same for `n` sets of as many random neurons (the 'Random' control)
  erase_run     every erase of one evaluated data set: Table 3, Fig. 5 (erase) and Table 4 (KN)
  finetune      one restricted fine-tuning run, evaluated after the epochs of Table 2
  ipp           Table 4's IPP from the erase accuracies
  high_overlap  the rule of claims CN-01 and CN-12
  fmt           a number as the claims' text prints it

Accuracies are in % (points) where the name says so; per-question results are `[question]`
float arrays of 1.0 (right) and 0.0 (wrong).
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch

from ..interventions import answer_batches, evaluate_options, random_neurons, restricted_finetune, zeroed
from ..metrics import mean_ci
from ..models import LM
from ..neurons import mask_to_ids
from ..report import rounded
from ..scales import CNL
from ..sites import Site
from ..tasks.core import MCQuestion
from ..tasks.loaders import Example


def interval(values, n_resamples: int, seed: int) -> tuple[float, float]:
    """95 % BCa bootstrap interval (low, high) of the mean of the finite `values`
    (`metrics.mean_ci`, method "BCa"). Values that cannot vary under resampling (fewer
    than two, or all equal) give the point (mean, mean), not nan: a claim reads the bound."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if len(x) < 2 or np.ptp(x) == 0:
        mean = x.mean() if len(x) else math.nan
        return mean, mean
    _, low, high = mean_ci(x, n_resamples=n_resamples, seed=seed, method="BCa")
    return low, high


def correct(lm: LM, site: Site, questions: Sequence[MCQuestion], neurons) -> np.ndarray:
    """Per question 1.0/0.0, `[question]`, with the `neurons`' weights zeroed (`zeroed`: the
    paper's 'set their parameter to 0', so a = 0 at every position); [] reads the base model."""
    with zeroed(lm, site, neurons):
        return evaluate_options(lm, questions).correct.numpy().astype(float)


def random_draws(lm: LM, site: Site, questions: Sequence[MCQuestion], count: int, n: int,
                 seed: int) -> list[np.ndarray]:
    """`correct` for n sets of `count` neurons drawn uniformly over all layers
    (`random_neurons`, seeds seed + 1 .. seed + n): a list of n `[question]` arrays.
    count = 0 (nothing located): n copies of the base model's."""
    return [correct(lm, site, questions, random_neurons(site, count, seed=seed + 1 + r) if count else [])
            for r in range(n)]


def erase_run(lm: LM, site: Site, questions: Sequence[MCQuestion], name: str,
              masks: dict[str, dict[float, torch.Tensor]], kn: torch.Tensor, trained: Sequence[str],
              config: CNL, seed: int) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Every erase (CNL §5.4) read on data set `name`'s `questions`, as `correct` arrays:

      "base"                 nothing zeroed
      "located {s}", "random {s}"  (name in `trained`) its own sigma-s mask, for every s in
                             config.sigmas (Table 3); random: config.n_random draws of as many
                             neurons at config.sigma, one at the other sigmas (`random_draws`)
      "kn", "kn random"      (name in `trained`) its KN mask `kn` and n_random draws of its size
                             (Table 4's KN row)
      "of {other}"           the config.sigma mask of each data set in `trained` (Fig. 5, erase)

    masks: {data set: {sigma: bool `[layer, neuron]`}}; kn: bool `[layer, neuron]`.
    """
    out = {"base": correct(lm, site, questions, [])}
    if name in trained:
        for sigma in config.sigmas:
            own = mask_to_ids(masks[name][sigma])
            out[f"located {sigma:g}"] = correct(lm, site, questions, own)
            out[f"random {sigma:g}"] = random_draws(lm, site, questions, len(own),
                                                    config.n_random if sigma == config.sigma else 1, seed)
        kn_ids = mask_to_ids(kn)
        out["kn"] = correct(lm, site, questions, kn_ids)
        out["kn random"] = random_draws(lm, site, questions, len(kn_ids), config.n_random, seed)
    for other in trained:
        own = name == other and f"located {config.sigma:g}" in out  # already read above
        out[f"of {other}"] = (out[f"located {config.sigma:g}"] if own
                              else correct(lm, site, questions, mask_to_ids(masks[other][config.sigma])))
    return out


def finetune(lm: LM, site: Site, examples: Sequence[Example], neurons, questions: dict[str, Sequence[MCQuestion]],
             name: str, mode: str, epochs: Sequence[int], lr: float, seed: int) -> dict:
    """One run of CNL §5.4 'Enhance' (Table 2): `restricted_finetune` of `neurons` (bool
    `[layer, neuron]`) in `mode` ("located", "random", "without") on the answers of `examples`
    (batches of 8) for max(epochs) epochs, at lr with Adam.

    Returns {"acc": {epoch: {data set: accuracy %}}, "losses": [mean loss per epoch]}: after
    each epoch in `epochs` the accuracy on `questions[name]`, and after the last one on every
    data set of `questions` (Fig. 5, App. G). lm's weights are as before on return.
    """
    saved = copy.deepcopy(lm.model.state_dict())
    batches = answer_batches(lm, [(e.prompt, " " + e.answer) for e in examples], batch_size=8)
    accs = {}

    def after(epoch: int) -> None:
        if epoch in epochs:
            tested = list(questions) if epoch == max(epochs) else [name]
            accs[epoch] = {t: 100 * evaluate_options(lm, questions[t]).acc for t in tested}

    try:
        losses = restricted_finetune(lm, site, mask_to_ids(neurons), batches, lr=lr, epochs=max(epochs), mode=mode,
                                     seed=seed, progress=False, after_epoch=after)
    finally:
        lm.model.load_state_dict(saved)
    return {"acc": accs, "losses": losses}


def ipp(erased: dict[str, float | list[float]], located_key: str, random_key: str) -> float:
    """Table 4's IPP in points, 'Performance - Optimal-performance': the accuracy lost when
    the located neurons are zeroed minus the largest loss among the random draws.
    erased: accuracies % of one data set, "base", `located_key` a number, `random_key` a list."""
    drop = erased["base"] - erased[located_key]
    return drop - max(erased["base"] - r for r in erased[random_key])


def high_overlap(overlap: float, chance: float) -> bool:
    """Claims CN-01 and CN-12: the halves' overlap (%) is at least 50 % and at least 5x the
    overlap of random sets of the same sizes (`chance`, %)."""
    return bool(overlap >= 50 and overlap >= 5 * chance)


def fmt(x) -> str:
    """`x` as the claims' text prints it: `rounded` to two significant digits."""
    return f"{rounded(x)}"
