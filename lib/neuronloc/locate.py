"""Task-level localization: score every question of a task, aggregate, return the
good (and bad) neuron sets. One protocol for the methods of all three papers.

  method    scorer        target       aggregation (per example = proxies summed)
  ace       ig            option_prob  additive reordering, good + bad (NeuronLLM Eq. 3-5)
  tn        ig            prob_margin  additive reordering (NeuronLLM §4.3: TN 'equipped')
  qrnca     ig            answer_prob  additive reordering (QRNCA 'equipped')
  kn        ig            answer_prob  count-based selection (KN, Dai et al. 2022)
  neurgrad  neurgrad      answer_prob  mean NEG; good = most positive, bad = most negative
  act       activation    -            mean activation, top k (ACT)
  random    random        -            seeded random k (RANDOM)
  cnl       ig_positions  answer_prob  mean over data, sigma-mask (CNL Eq. 7-8; free-form data)

Per-question scores are cached on disk (`store`), so an interrupted run resumes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .attribution import attribute
from .attribution.aggregate import ace, kn_select, scale_z, sigma_mask, top_k, bottom_k
from .models import LM
from .store import Store, key


@dataclass(frozen=True)
class Method:
    scorer: str
    target: str
    aggregation: str
    has_bad: bool


METHODS = {
    "ace": Method("ig", "option_prob", "additive", True),
    "tn": Method("ig", "prob_margin", "additive", True),
    "qrnca": Method("ig", "answer_prob", "additive", True),
    "kn": Method("ig", "answer_prob", "kn", False),
    "neurgrad": Method("neurgrad", "answer_prob", "mean", True),
    "act": Method("activation", "answer_prob", "mean", False),
    "random": Method("random", "answer_prob", "random", False),
    "cnl": Method("ig_positions", "answer_prob", "sigma", False),
}


@dataclass
class Located:
    """Result of `locate`.

    scores `[layer, neuron]`: the aggregated task-level score.
    good / bad: ranked flat ids (best first); bad is empty for methods without bad neurons.
    example_scores `[example, layer, neuron]`: per-example scores (proxies summed).
    """

    method: str
    scores: torch.Tensor
    good: torch.Tensor
    bad: torch.Tensor
    example_scores: torch.Tensor | None = None
    params: dict = field(default_factory=dict)


def question_scores(lm: LM, questions, scorer: str, target: str, store: Store | None = None,
                    progress: bool = True, desc: str = "", **params) -> torch.Tensor:
    """Scores of every question: `[question, layer, neuron]`, cached per question."""
    out = []
    for q in tqdm(list(questions), desc=desc or f"{scorer}/{target}", disable=not progress, leave=False):
        run = lambda: attribute(scorer, lm, q, target=target, **params).scores
        keyed = {p: v for p, v in params.items() if p != "batch_size"}  # batching does not change scores
        out.append(run() if store is None else
                   store.cached(key(model=lm, question=q, scorer=scorer, target=target, params=keyed), run))
    return torch.stack(out)


def _by_example(questions, scores: torch.Tensor) -> torch.Tensor:
    """Sum the proxies of each example (same uid): `[example, layer, neuron]` (NeuronLLM Eq. 4)."""
    uids = [getattr(q, "uid", "") or str(i) for i, q in enumerate(questions)]
    order = list(dict.fromkeys(uids))
    index = torch.tensor([order.index(u) for u in uids])
    return torch.zeros(len(order), *scores.shape[1:], dtype=scores.dtype).index_add_(0, index, scores)


def locate(lm: LM, questions, method: str = "ace", k: int = 100, z: int | None = None, steps: int | None = None,
           store: Store | None = None, progress: bool = True, seed: int = 0, sigma: float = 6.0,
           spread: str = "var", kn_threshold: float = 0.2, kn_share: float = 0.5, site: str = "ffn.mid",
           batch_size: int | None = None) -> Located:
    """Locate the neurons of a task.

    questions: QATT proxies (MCQuestions; proxies of one example share a uid) or, for
      cnl, free-form examples with `prompt` and `answer`.
    k: size of the good (and bad) sets; z: per-example set size of additive
      reordering (default: `scale_z`, the paper's 5000-of-352,256 fraction).
    steps: IG steps (default 16 for ig, CNL's S+1 = 20 for ig_positions).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    m = METHODS[method]
    questions = list(questions)
    site_ = lm.site(site)
    if m.aggregation == "random":
        scores = attribute("random", lm, None, seed=seed, site=site).scores
        return Located(method, scores, top_k(scores, k), torch.empty(0, dtype=torch.long), None, {"seed": seed, "k": k})
    params: dict = {"site": site}
    if m.scorer == "ig":
        params.update(steps=steps or 16, batch_size=batch_size)
    elif m.scorer == "ig_positions":
        params.update(steps=steps or 20, batch_size=batch_size)
    per_question = question_scores(lm, questions, m.scorer, m.target, store, progress, desc=method, **params)
    per_example = _by_example(questions, per_question)
    info = {"k": k, **{p: v for p, v in params.items() if p != "batch_size"}}
    if m.aggregation == "additive":
        z = z or scale_z(site_.n_neurons, k)
        res = ace(per_example, z, k)
        return Located(method, res.scores, res.good, res.bad if m.has_bad else res.bad[:0], per_example, {**info, "z": z})
    if m.aggregation == "kn":
        sel = kn_select(per_example, kn_threshold, kn_share, k)
        scores = per_example.mean(0)
        return Located(method, scores, sel.ids, torch.empty(0, dtype=torch.long), per_example,
                       {**info, "threshold": kn_threshold, "share": kn_share})
    scores = per_example.mean(0)
    if m.aggregation == "mean":
        bad = bottom_k(scores, k) if m.has_bad else torch.empty(0, dtype=torch.long)
        return Located(method, scores, top_k(scores, k), bad, per_example, info)
    mask = sigma_mask(scores, sigma, spread)  # CNL Eq. 8
    ids = torch.nonzero(mask.flatten())[:, 0]
    ids = ids[torch.argsort(-scores.flatten()[ids].abs(), stable=True)]
    return Located(method, scores, ids, torch.empty(0, dtype=torch.long), per_example,
                   {**info, "sigma": sigma, "spread": spread})
