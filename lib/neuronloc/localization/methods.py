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

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..attribution import attribute
from ..attribution.aggregate import ace, kn_select, scale_z, sigma_mask
from ..configs import ACE, CONFIGS, KN, MethodConfig, method_config
from ..configs import CNL as CNLConfig
from ..models import LM
from ..neurons import bottom_k, top_k
from ..parallel import Shard, gather
from ..store import Store, key
from ..tasks.core import MCQuestion, read_alike


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
    params: dict = field(default_factory=dict)  # the config's fields, the scorer's, and what the aggregation derived
    config: MethodConfig | None = None


NONE = torch.empty(0, dtype=torch.long)


# ---------------------------------------------------------------- aggregations
# Each maps per-example scores `[example, layer, neuron]` and the method's config to
# (task-level scores `[layer, neuron]`, good, bad, what it derived: z of the reordering).

def _additive(per_example, cfg: ACE) -> tuple:
    """NeuronLLM Eq. 4-5 additive reordering; z defaults to the paper's fraction (`scale_z`)."""
    z = cfg.z or scale_z(per_example[0].numel(), cfg.k)
    res = ace(per_example, z, cfg.k)
    return res.scores, res.good, res.bad, {"z": z}


def _kn(per_example, cfg: KN) -> tuple:
    """KN count-based refining (Dai et al. 2022): kept in enough examples, then by count and mean."""
    sel = kn_select(per_example, cfg.threshold, cfg.share, cfg.k)
    return per_example.mean(0), sel.ids, NONE, {}


def _mean(per_example, cfg) -> tuple:
    """Mean over examples; good = top k, bad = bottom k (most negative)."""
    scores = per_example.mean(0)
    return scores, top_k(scores, cfg.k), bottom_k(scores, cfg.k), {}


def _mean_top(per_example, cfg) -> tuple:
    """Mean over examples; good = top k, no bad set (ACT)."""
    scores = per_example.mean(0)
    return scores, top_k(scores, cfg.k), NONE, {}


def _sigma(per_example, cfg: CNLConfig) -> tuple:
    """CNL Eq. 8: the sigma-mask of the mean score, ranked by |score|."""
    scores = per_example.mean(0)
    mask = sigma_mask(scores, cfg.sigma, cfg.spread)
    ids = torch.nonzero(mask.flatten())[:, 0]
    ids = ids[torch.argsort(-scores.flatten()[ids].abs(), stable=True)]
    return scores, ids, NONE, {}


@dataclass(frozen=True)
class Method:
    """A localization method: which scorer with which target, then which aggregation
    (its parameters: the config of the same name, `neuronloc.configs`).

    free_form: takes free-form examples (prompt, answer) instead of multiple choice.
    per_question: scores each question (False: one draw for the task, as RANDOM).
    """

    scorer: str
    target: str
    aggregate: Callable
    free_form: bool = False
    per_question: bool = True


METHODS: dict[str, Method] = {
    "ace": Method("ig", "option_prob", _additive),
    "tn": Method("ig", "prob_margin", _additive),
    "qrnca": Method("ig", "answer_prob", _additive),
    "kn": Method("ig", "answer_prob", _kn),
    "neurgrad": Method("neurgrad", "answer_prob", _mean),
    "act": Method("activation", "answer_prob", _mean_top),
    "random": Method("random", "answer_prob", _mean_top, per_question=False),
    "cnl": Method("ig_positions", "answer_prob", _sigma, free_form=True),
}
assert METHODS.keys() == CONFIGS.keys(), "every method has a config of the same name (neuronloc.configs)"


def question_scores(lm: LM, questions, scorer: str, target: str, store: Store | None = None,
                    progress: bool = True, desc: str = "", shard: Shard | None = None, **params) -> torch.Tensor:
    """Scores of every question: `[question, layer, neuron]`, cached per question.

    shard: this process's share when several processes split the questions (default
    `Shard.current()`, from the launcher's RANK / WORLD_SIZE): it scores questions
    i % world == rank into `store`, then reads the others' from it (`parallel`).
    """
    questions = list(questions)
    shard = shard or Shard.current()
    keyed = {p: v for p, v in params.items() if p != "batch_size"}  # batching does not change scores
    # proxies that read out alike (text read-outs) score alike: targets do not depend on the option order
    rep = read_alike(questions, params.get("readout"))[0] if all(isinstance(q, MCQuestion) for q in questions) \
        else list(range(len(questions)))
    keys = [None if store is None else key(model=lm, question=questions[rep[i]], scorer=scorer, target=target,
                                           params=keyed) for i in range(len(questions))]
    if shard.world > 1 and store is None:
        raise ValueError(f"{shard.world} processes merge their scores through the score cache: pass a store "
                         "(the CLI's --no-cache cannot be used with several processes)")
    out = {}
    for i in tqdm(shard.mine(len(questions)), desc=desc or f"{scorer}/{target}", disable=not progress, leave=False):
        if rep[i] != i and rep[i] in out:
            out[i] = out[rep[i]]
            continue
        run = lambda q=questions[rep[i]]: attribute(scorer, lm, q, target=target, **params).scores
        out[i] = run() if store is None else store.cached(keys[i], run)
    if shard.world > 1:
        rest = [i for i in range(len(questions)) if i not in out]
        out.update(zip(rest, gather(store, [keys[i] for i in rest], progress=progress)))
    return torch.stack([out[i] for i in range(len(questions))])


def by_example(questions, scores: torch.Tensor) -> torch.Tensor:
    """Sum the proxies of each example (same uid): `[example, layer, neuron]` (NeuronLLM Eq. 4)."""
    uids = [getattr(q, "uid", "") or str(i) for i, q in enumerate(questions)]
    order = {u: i for i, u in enumerate(dict.fromkeys(uids))}
    index = torch.tensor([order[u] for u in uids])
    return torch.zeros(len(order), *scores.shape[1:], dtype=scores.dtype).index_add_(0, index, scores)


def locate(lm: LM, questions, method: str | MethodConfig = "ace", *, store: Store | None = None,
           progress: bool = True, site: str = "ffn.mid", batch_size: int | None = None, readout: str | None = None,
           layers=None, **options) -> Located:
    """Locate the neurons of a task.

    questions: QATT proxies (MCQuestions; proxies of one example share a uid) or, for
      cnl, free-form examples with `prompt` and `answer`.
    method: a config (`neuronloc.configs`: `ACE(k=100, z=None, steps=16)`, `KN(k, threshold,
      share, steps)`, `CNL(sigma, spread, steps)`, ...) or a method name, whose defaults the
      `options` replace (`locate(lm, q, "kn", k=50)`; options of other methods are ignored,
      so one call sweeps methods; `configs.method_config`).
    readout: how multiple-choice answers are read (default: each question's own).
    layers: score only these layers (default all); the others score 0 (never selected
      unless fewer neurons than k score non-zero). RANDOM always draws from every layer.
    batch_size: IG grid points per forward (memory, not results).
    """
    cfg = method_config(method, **options)
    m = METHODS[cfg.name]
    questions = list(questions)
    if m.per_question:
        _check_kind(questions, cfg.name, m)
    if not m.per_question:
        scores = attribute(m.scorer, lm, None, seed=cfg.seed, site=site).scores
        _, good, bad, used = m.aggregate(scores[None], cfg)
        return Located(cfg.name, scores, good, bad, None, {**asdict(cfg), **used}, cfg)
    params: dict = {"site": site}
    if hasattr(cfg, "steps"):
        params.update(steps=cfg.steps, batch_size=batch_size)
    if readout is not None and not m.free_form:
        params["readout"] = readout
    if layers is not None:
        params["layers"] = sorted(int(l) for l in layers)
    per_question = question_scores(lm, questions, m.scorer, m.target, store, progress, desc=cfg.name, **params)
    per_example = by_example(questions, per_question.nan_to_num(0.0))  # skipped layers are NaN: score 0
    scores, good, bad, used = m.aggregate(per_example, cfg)
    info = {**asdict(cfg), **{p: v for p, v in params.items() if p != "batch_size"}, **used}
    return Located(cfg.name, scores, good, bad, per_example, info, cfg)


def _check_kind(questions: list, method: str, m: Method) -> None:
    """Free-form methods take (prompt, answer) examples; option targets need options."""
    if not questions:
        raise ValueError(f"{method}: no questions to locate on: pass at least one")
    mc = [isinstance(q, MCQuestion) for q in questions]
    if m.free_form and any(mc):
        raise ValueError(f"{method} takes free-form examples (prompt and answer, e.g. load_examples('gsm8k')), "
                         "not multiple-choice questions")
    if m.target in ("option_prob", "prob_margin") and not all(mc):
        raise ValueError(f"{method} reads answer options: it takes multiple-choice questions "
                         "(e.g. qatt(load_task(...))); for free-form examples use cnl, kn or neurgrad")
