"""Interventions on located neurons and the option read-out that measures them.

Activation edits (all built on `hooks.intervene` / `hooks.Edit`):
  silence a = 0, excite a = 2a                       NeuronLLM §3.5
  enhancer = excite good + silence bad               NeuronLLM §3.5
  degrader = silence good + excite bad               NeuronLLM §3.5
  shift a = a + Δ·sign(a)                            NEG §2.1 / §3.3
  erase = silence                                    CNL §5.4 'Erase'
A budget of K neurons is split good:bad by a ratio swept 0..100 % in 10 % steps,
the best ratio is reported (NeuronLLM §4.4): `split_budget`, `sweep_ratios`.

Weight edits: `zeroed` sets the neurons' weights to 0 inside a block (CNL 'Erase');
`restricted_finetune` trains only the FFN weights that belong to the
given neurons (CNL §5.4 'Enhance': Random / W/o located / Located).

A neuron set is {layer: [index]}, a bool mask `[layer, neuron]`, or flat ids
(flat = layer * n_inner + index; needs the `site` to be split), see `neuronloc.neurons`.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Iterable, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .engine import (Layout, forward_rows, logits_from, make_query, option_logits_suffice, prefix_cache, repeat_cache,
                     returned_cache, rows_layout, with_cache)
from .hooks import Edit, excite, intervene, neuron_hooks, silence
from .metrics import accuracy, comprehension
from .models import LM
from .neurons import to_layer_dict
from .sites import Site, family_of
from .targets import option_prob
from .tasks.core import READOUTS, MCQuestion, read_alike, render

log = logging.getLogger(__name__)

RATIOS = [i / 10 for i in range(11)]  # good share of the budget, 0 %..100 % in 10 % steps (NeuronLLM §4.4)
MODES = ("located", "random", "without")


def _layer_dict(neurons, site: Site | None) -> dict[int, list[int]]:
    """{layer: [index]} of a neuron set in any form (flat ids need the site)."""
    return to_layer_dict(neurons, None if site is None else site.shape)


def enhancer(good, bad, site: Site | None = None) -> list[Edit]:
    """Excite good (a = 2a) + silence bad (a = 0), NeuronLLM §3.5."""
    return excite(_layer_dict(good, site)) + silence(_layer_dict(bad, site))


def degrader(good, bad, site: Site | None = None) -> list[Edit]:
    """Silence good + excite bad, NeuronLLM §3.5."""
    return silence(_layer_dict(good, site)) + excite(_layer_dict(bad, site))


def shift(neurons, delta: float, site: Site | None = None) -> list[Edit]:
    """a = a + Δ·sign(a), NEG §2.1 (the reference code's activation shift)."""
    return [Edit(l, idx, "add_sign", delta) for l, idx in _layer_dict(neurons, site).items()]


def erase(neurons, site: Site | None = None) -> list[Edit]:
    """CNL §5.4 'Erase': zero the located neurons (= silence)."""
    return silence(_layer_dict(neurons, site))


def split_budget(good_ranked, bad_ranked, budget: int, ratio: float):
    """NeuronLLM §4.4: a budget of K neurons = round(ratio * K) best good + the rest best bad.

    good_ranked / bad_ranked: ranked neurons, best first (flat-id tensors or lists);
    returns their prefixes (same type). round is half up. A list shorter than its
    share gives what it has (the budget is not refilled from the other list).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    n_good = int(ratio * budget + 0.5)
    return good_ranked[:n_good], bad_ranked[:budget - n_good]


# ---------------------------------------------------------------- option read-out

def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0.. counted from each row's first real token, so a left-padded row is
    computed as if unpadded (absolute position embeddings, RoPE). `[batch, seq]`."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class OptionEval:
    """Answers of Q questions read from the option-label logits at the last position.

    probs: `[Q, n_options]` float32 softmax over the option-label logits
    (0 in the columns past a question's own option count); pred, answer: `[Q]` long;
    correct: `[Q]` bool; uids: the questions' uid (QATT proxies share it).
    """

    probs: torch.Tensor
    pred: torch.Tensor
    answer: torch.Tensor
    correct: torch.Tensor
    uids: list[str]

    @property
    def acc(self) -> float:
        """Acc over the proxy QAs (NeuronLLM §4.2)."""
        return accuracy(self.correct)

    @property
    def com(self) -> float:
        """Com: share of examples (uids) with >= 2 of their 3 proxies right (NeuronLLM §4.2)."""
        if any(not u for u in self.uids):
            raise ValueError("Com groups proxies by question.uid, but some questions have no uid: build them with tasks.qatt")
        ids = {u: i for i, u in enumerate(dict.fromkeys(self.uids))}
        return comprehension(self.correct, [ids[u] for u in self.uids])


@torch.no_grad()
def evaluate_options(lm: LM, questions: Iterable[MCQuestion], edits: Sequence[Edit] | None = None,
                     site: Site | str = "ffn.mid", positions="last", chat: bool = False,
                     readout: str | None = None, progress: bool = False) -> OptionEval:
    """Answer MC questions, optionally under neuron `edits`.

    positions="last" (the papers' protocol: edits at the answer position) goes through
    `evaluate_conditions`. Other positions ("all" or indices) edit the whole sequence
    of each option row (prompt, then the continuation but its last token), one question
    at a time.
    readout: how answers are read (default: each question's own `readout`).
    """
    if positions == "last":
        return evaluate_conditions(lm, questions, [list(edits or [])], site, chat=chat, readout=readout,
                                   progress=progress)[0]
    questions = _nonempty(questions)
    site = lm.site(site) if isinstance(site, str) else site
    probs = torch.zeros(len(questions), max(len(q.options) for q in questions))
    for i, q in enumerate(tqdm(questions, desc="evaluate", disable=not progress, leave=False)):
        query = make_query(lm, q, chat=chat, readout=readout)  # outside the edits: pmi priors are unedited
        with intervene(lm.model, site, edits, positions=positions) if edits else nullcontext():
            scores = forward_rows(lm, Layout(query, 1, full=True), None)
        probs[i, :query.n_options] = scores[0].softmax(-1).cpu()
    return _option_eval(questions, probs)


def _nonempty(questions) -> list[MCQuestion]:
    questions = list(questions)
    if not questions:
        raise ValueError("no questions to evaluate: pass at least one MCQuestion")
    return questions


def _option_eval(questions: list[MCQuestion], probs: torch.Tensor) -> OptionEval:
    pred = probs.argmax(-1)
    answer = torch.tensor([q.answer for q in questions])
    return OptionEval(probs, pred, answer, pred == answer, [q.uid for q in questions])


@torch.no_grad()
def evaluate_conditions(lm: LM, questions: Iterable[MCQuestion], conditions: Sequence[Sequence[Edit]],
                        site: Site | str = "ffn.mid", chat: bool = False, rows: int = 64,
                        readout: str | None = None, progress: bool = False, merge: bool = True) -> list[OptionEval]:
    """Answer every question under every condition (a list of edits at the answer position).

    Edits at the answer position leave every earlier position unchanged, so each
    question's prompt prefix runs once (KV cache) and only the answer position (and
    the option continuations) is re-run, one batch row per condition, or one per
    (condition, option) for multi-token options (`engine.Layout`): an 11-ratio sweep
    costs about one prompt forward per question instead of eleven.
    rows: batch rows per forward. readout: default each question's own.
    merge: questions that read out alike (`tasks.read_alike`: QATT proxies under a text
    read-out) are run once and their option probabilities permuted (False: run each).
    """
    questions, conditions = _nonempty(questions), [list(c) for c in conditions]
    if any(e.rows is not None or e.positions is not None for c in conditions for e in c):
        raise ValueError("evaluate_conditions edits the answer position of rows it assigns itself: "
                         "pass edits without rows= or positions= (evaluate_options takes other positions)")
    site = lm.site(site) if isinstance(site, str) else site
    probs = torch.zeros(len(conditions), len(questions), max(len(q.options) for q in questions))
    rep, perm = read_alike(questions, readout) if merge else (list(range(len(questions))), None)
    for i, q in enumerate(tqdm(questions, desc="evaluate", disable=not progress, leave=False)):
        if rep[i] != i:  # the same prompt as an earlier question, options in another order
            probs[:, i, :len(q.options)] = probs[:, rep[i], perm[i]]
            continue
        query = make_query(lm, q, chat=chat, readout=readout)
        cache = prefix_cache(lm, query.prefix)
        step = max(1, rows // rows_layout(lm, query, 1, cache).per_condition)
        for start in range(0, len(conditions), step):
            chunk = conditions[start:start + step]
            layout = rows_layout(lm, query, len(chunk), cache)
            edits = [replace(e, rows=layout.condition_rows(r)) for r, cond in enumerate(chunk) for e in cond]
            with intervene(lm.model, site, edits, positions=[layout.at]):
                scores = forward_rows(lm, layout, cache, option_logits_suffice(query, option_prob))
            probs[start:start + len(chunk), i, :query.n_options] = scores.softmax(-1).cpu()
    return [_option_eval(questions, p) for p in probs]


@torch.no_grad()
def evaluate_zeroed(lm: LM, questions: Iterable[MCQuestion], neuron_sets: Sequence, site: Site | str = "ffn.mid",
                    rows: int = 64, readout: str | None = None, progress: bool = False) -> list[OptionEval]:
    """`evaluate_options` under `zeroed(lm, site, s)` for every neuron set s of `neuron_sets`
    (CNL §5.4 'Erase': a = 0 at every position), the sets of one question run as rows of
    one batch: one `OptionEval` per set. An empty set reads the unedited model.

    Each row multiplies the site's units by its own 0/1 mask (a zeroed neuron's weights
    give a = 0, so the read-out equals `zeroed`'s to float precision, `tests/test_experiments_cnl.py`).
    The prompt prefix runs once per set as one batch of rows (no padding: the rows are the
    same tokens), its KV cache is repeated for the options' rows, so a question under 13
    sets costs one 13-row forward instead of 13 one-row forwards (2.3x faster on GSM8K
    questions on 2 CPU cores, `bench/results/erase.json`). rows: most option rows per forward.
    """
    questions = _nonempty(questions)
    site = lm.site(site) if isinstance(site, str) else site
    keeps = []
    for s in neuron_sets:
        keep = torch.ones(site.n_layers, site.n_inner)
        for layer, idx in _layer_dict(s, site).items():
            keep[layer, torch.as_tensor(idx, dtype=torch.long)] = 0.0
        keeps.append(keep)
    if not keeps:
        return []
    keeps = torch.stack(keeps)  # [sets, layer, neuron]
    edited = [layer for layer in range(site.n_layers) if bool((keeps[:, layer] == 0).any())]
    probs = torch.zeros(len(keeps), len(questions), max(len(q.options) for q in questions))
    current: dict[str, torch.Tensor] = {}

    def masker(layer):
        def fn(t):
            return t * current["keep"][:, layer].to(t.device, t.dtype)[:, None, :]
        return fn

    for i, q in enumerate(tqdm(questions, desc="evaluate (zeroed)", disable=not progress, leave=False)):
        query = make_query(lm, q, readout=readout)
        probe = Layout(query, 1, full=query.prefix.numel() == 0)
        step = max(1, rows // probe.per_condition)
        for start in range(0, len(keeps), step):
            chunk = keeps[start:start + step]
            layout = Layout(query, len(chunk), full=probe.full)
            with neuron_hooks(lm.model, site, {layer: masker(layer) for layer in edited}):
                past = None
                if not layout.full:  # the prefix once per set, then its cache repeated for the option rows
                    current["keep"] = chunk
                    out = lm.model(input_ids=query.prefix[None].expand(len(chunk), -1).to(lm.device), use_cache=True,
                                   **logits_from(lm.model, 1))
                    past = repeat_cache(returned_cache(out), layout.per_condition, lm.model.config)
                current["keep"] = chunk.repeat_interleave(layout.per_condition, 0)
                out = lm.model(input_ids=layout.input_ids().to(lm.device), **with_cache(lm.model, past),
                               use_cache=past is not None, **logits_from(lm.model, layout.width - layout.at))
            probs[start:start + len(chunk), i, :query.n_options] = layout.log_scores(out.logits).softmax(-1).cpu()
    return [_option_eval(questions, p) for p in probs]


def trivial_accuracy(questions: Sequence[MCQuestion]) -> float:
    """The accuracy of the best constant answer on `questions`: always the same option text
    (e.g. "positive" on a sentiment task whose options never change) or always the same
    option position ("A"), whichever scores more. A model must beat this, not 1/k."""
    import collections

    questions = list(questions)
    if not questions:
        raise ValueError("trivial_accuracy needs at least one question")
    by_text = collections.Counter(q.options[q.answer] for q in questions)
    by_position = collections.Counter(q.answer for q in questions)
    return max(by_text.most_common(1)[0][1], by_position.most_common(1)[0][1]) / len(questions)


@dataclass(frozen=True)
class Competence:
    """How well a model answers a task under one read-out, against the best trivial answer.

    acc = correct / n; chance: mean over questions of 1 / n_options; trivial: the accuracy of
    the best constant answer (`trivial_accuracy`); p_value: one-sided exact binomial test of
    acc > max(chance, trivial); ci: 95 % Clopper-Pearson interval of acc.
    """

    readout: str
    n: int
    correct: int
    chance: float
    p_value: float
    ci: tuple[float, float]
    trivial: float

    @property
    def acc(self) -> float:
        return self.correct / self.n

    @property
    def baseline(self) -> float:
        """What the model has to beat: the larger of chance and the best constant answer."""
        return max(self.chance, self.trivial)

    def above_chance(self, alpha: float = 0.05) -> bool:
        """Above the best trivial answer (not only 1/k) at level alpha."""
        return self.p_value < alpha

    def __str__(self) -> str:
        return (f"{self.readout}: acc {self.acc:.2f} [{self.ci[0]:.2f}, {self.ci[1]:.2f}] over {self.n}, "
                f"chance {self.chance:.2f}, best constant answer {self.trivial:.2f}, p = {self.p_value:.2g}")


def competence_of(readout: str, questions: Sequence[MCQuestion], correct) -> Competence:
    """`Competence` from per-question correctness (`[question]` bool) under `readout`."""
    from scipy.stats import binomtest

    questions = list(questions)
    k, n = int(sum(bool(c) for c in correct)), len(questions)
    chance = sum(1 / len(q.options) for q in questions) / n
    trivial = trivial_accuracy(questions)
    test = binomtest(k, n, max(chance, trivial), alternative="greater")
    ci = binomtest(k, n, chance).proportion_ci(confidence_level=0.95, method="exact")  # two-sided
    return Competence(readout, n, k, chance, float(test.pvalue), (float(ci.low), float(ci.high)), trivial)


def competence(lm: LM, questions: Iterable[MCQuestion], readout: str, chat: bool = False,
               progress: bool = False) -> Competence:
    """Accuracy of `lm` on `questions` read by `readout`, with a binomial test against the best
    trivial answer (`trivial_accuracy`; at least chance).

    Pass one question per example (before QATT): the proxies of one example are not
    independent draws, so they would overstate the evidence.
    """
    questions = _nonempty(questions)
    uids = [q.uid for q in questions if q.uid]
    if len(set(uids)) != len(uids):
        raise ValueError("competence needs one question per example, but some share a uid (QATT proxies?): "
                         "pass task.questions before qatt()")
    result = evaluate_options(lm, questions, chat=chat, readout=readout, progress=progress)
    return competence_of(readout, questions, result.correct.tolist())


def write_competence(path, model: str, n: int, seed: int, competences: dict[str, dict[str, Competence]]) -> None:
    """Write {task: {read-out: Competence}} as competence.json (what `read_competence` reads)."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    rows = [{"task": task, **asdict(c), "acc": c.acc} for task, per in competences.items() for c in per.values()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model, "n": n, "seed": seed, "rows": rows}, indent=1) + "\n")


def read_competence(path, seed: int, n: int = 1, model: str | None = None) -> dict[str, dict[str, Competence]]:
    """{task: {read-out: Competence}} from a competence.json written by scripts/competence.py
    (`results/<slug>/competence.json`), or {} when it is missing or does not cover the run:
    another seed, fewer than `n` questions per task, or (when given) another model name.
    The notebooks read it instead of measuring competence again; `pick_readout` applies
    `choose_readout`'s rule to it."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("seed") != seed or data.get("n", 0) < n or (model is not None and data.get("model") != model):
        return {}
    out: dict[str, dict[str, Competence]] = {}
    for r in data["rows"]:
        if "trivial" not in r:  # written before competence was tested against the best constant answer
            return {}
        out.setdefault(r["task"], {})[r["readout"]] = Competence(r["readout"], r["n"], r["correct"], r["chance"],
                                                                  r["p_value"], tuple(r["ci"]), r["trivial"])
    return out


def pick_readout(results: dict[str, Competence], alpha: float = 0.05) -> str | None:
    """The rule of `choose_readout` on competences already measured (e.g. read back from
    results/<slug>/competence.json): "letter" if above chance, else the most accurate
    read-out above chance, else None; Bonferroni over the read-outs given."""
    readouts = list(results)
    level = alpha / len(readouts)
    passing = [r for r in readouts if results[r].above_chance(level)]
    if "letter" in passing:
        return "letter"
    return max(passing, key=lambda r: (results[r].acc, -readouts.index(r)), default=None)


def choose_readout(lm: LM, questions: Sequence[MCQuestion], readouts: Sequence[str] = READOUTS,
                   alpha: float = 0.05, progress: bool = False) -> tuple[str | None, dict[str, Competence]]:
    """The read-out to measure a task with, and the competence under every read-out.

    "letter" (the papers' protocol) when the model is above chance with it; otherwise
    the most accurate read-out that is above chance; None when none is (claims that
    need task competence are then "n/a"). Significance is Bonferroni-corrected over the
    read-outs tried (alpha / len(readouts)). Choose on questions that are not the ones
    the claims are measured on (e.g. the identification set), so the choice is not
    fitted to the evaluation data.
    """
    results = {r: competence(lm, questions, r, progress=progress) for r in readouts}
    return pick_readout(results, alpha), results


def sweep_ratios(lm: LM, questions: Sequence[MCQuestion], good_ranked, bad_ranked, budget: int,
                 mode: str = "enhance", site: Site | str = "ffn.mid", ratios: Sequence[float] = RATIOS,
                 positions="last", progress: bool = True) -> dict:
    """NeuronLLM §4.4: Acc and Com of the enhancer (or degrader) for every good:bad ratio.

    good_ranked / bad_ranked: flat ids, best first. Returns
    {"base": {"acc", "com"}, "rows": [{"ratio", "n_good", "n_bad", "acc", "com"}, ...],
     "best": the row with the highest Acc for "enhance" / lowest for "degrade" (ties:
     Com the same way, then the first ratio)}. RAC / RCC: `metrics.rac` / `metrics.rcc`.
    """
    if mode not in ("enhance", "degrade"):
        raise ValueError(f"mode must be 'enhance' or 'degrade', got {mode!r}")
    site = lm.site(site) if isinstance(site, str) else site
    operator = enhancer if mode == "enhance" else degrader
    splits = [split_budget(good_ranked, bad_ranked, budget, ratio) for ratio in ratios]
    conditions = [[]] + [operator(good, bad, site) for good, bad in splits]
    if positions == "last":
        base, *results = evaluate_conditions(lm, questions, conditions, site, progress=progress)
    else:
        base, *results = [evaluate_options(lm, questions, c, site, positions) for c in conditions]
    rows = [dict(ratio=ratio, n_good=len(good), n_bad=len(bad), acc=result.acc, com=result.com)
            for ratio, (good, bad), result in zip(ratios, splits, results)]
    return {"base": {"acc": base.acc, "com": base.com}, "rows": rows, "best": rows[best_ratio(base, results, mode)]}


@dataclass(frozen=True)
class Arm:
    """One intervention of NeuronLLM's tables: a method's ranked good and bad neurons
    (flat ids, best first) under the enhancer or degrader, the budget split good:bad by
    each ratio (§4.4). A good-only method (TN, QRNCA, KN, ACT, RANDOM originals) has an
    empty `bad` and ratios (1.0,); Good-only / Bad-only ablations are ratios 1.0 / 0.0.
    """

    name: str
    mode: str
    good: torch.Tensor
    bad: torch.Tensor
    budget: int
    ratios: tuple[float, ...] = tuple(RATIOS)

    def __post_init__(self):
        if self.mode not in ("enhance", "degrade"):
            raise ValueError(f"Arm mode must be 'enhance' or 'degrade', got {self.mode!r}")

    def conditions(self, site: Site) -> list[tuple[float, int, int, list[Edit]]]:
        """(ratio, n_good, n_bad, edits) per ratio."""
        operator = enhancer if self.mode == "enhance" else degrader
        out = []
        for ratio in self.ratios:
            good, bad = split_budget(self.good, self.bad, self.budget, ratio)
            out.append((ratio, len(good), len(bad), operator(good, bad, site)))
        return out


def sweep_arms(lm: LM, questions: Sequence[MCQuestion], arms: Sequence[Arm], site: Site | str = "ffn.mid",
               readout: str | None = None, store=None, progress: bool = True,
               examples_per_chunk: int = 10) -> tuple[OptionEval, list[list[OptionEval]]]:
    """Every arm at every ratio on `questions`, all conditions in one `evaluate_conditions`
    pass per chunk of examples (one prompt prefix per question for all of them).

    Returns (base, results): the unedited read-out and results[a][r] for arm a at its
    ratio r. With a `store` (`neuronloc.store.Store`) each chunk's option probabilities
    are cached under a key of the model, the questions, every condition and the read-out,
    so an interrupted run resumes at the chunk it was in.
    """
    from .store import key

    questions = _nonempty(questions)
    site = lm.site(site) if isinstance(site, str) else site
    conditions = [[]] + [c[3] for arm in arms for c in arm.conditions(site)]
    uids = list(dict.fromkeys(q.uid for q in questions))
    chunks = [set(uids[i:i + examples_per_chunk]) for i in range(0, len(uids), examples_per_chunk)]
    probs = []
    for chunk in tqdm(chunks, desc="arms", disable=not progress, leave=False):
        part = [q for q in questions if q.uid in chunk]
        run = lambda part=part: torch.stack([e.probs for e in evaluate_conditions(
            lm, part, conditions, site, readout=readout)])
        probs.append(run() if store is None else store.cached(
            key(model=lm, questions=part, conditions=conditions, readout=readout, site=site.name,
                what="sweep_arms"), run))
    order = [q for chunk in chunks for q in questions if q.uid in chunk]
    width = max(p.shape[-1] for p in probs)
    probs = torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[-1])) for p in probs], dim=1)
    evals = [_option_eval(order, p) for p in probs]
    base, out, at = evals[0], [], 1
    for arm in arms:
        out.append(evals[at:at + len(arm.ratios)])
        at += len(arm.ratios)
    return base, out


def comprehension_split(result: OptionEval, n_each: int, min_correct: int = 2) -> tuple[list[str], list[str]]:
    """NeuronLLM A.1: the first `n_each` examples (uids, in question order) the model
    comprehends (>= min_correct of its proxies right) and the first `n_each` it does not;
    fewer where the pool has fewer."""
    right: dict[str, int] = {}
    for uid, ok in zip(result.uids, result.correct.tolist()):
        right[uid] = right.get(uid, 0) + int(ok)
    yes = [u for u, n in right.items() if n >= min_correct]
    no = [u for u, n in right.items() if n < min_correct]
    return yes[:n_each], no[:n_each]


def best_ratio(base: OptionEval, results: Sequence[OptionEval], mode: str) -> int:
    """Index of the best ratio (§4.4 'report the best'): highest Acc for "enhance", lowest
    for "degrade"; ties by Com the same way, then the first ratio (as `sweep_ratios`)."""
    sign = 1 if mode == "enhance" else -1
    return max(range(len(results)), key=lambda i: (sign * results[i].acc, sign * results[i].com, -i))


def arm_rows(base: OptionEval, arms: Sequence[Arm], results: Sequence[Sequence[OptionEval]],
             n_resamples: int = 1000, seed: int = 0, **tags) -> list[dict]:
    """One row per arm and ratio for NeuronLLM's tables: acc, com, RAC and RCC (%, as the
    paper prints them: |change| / base) with `fail` (the opposite effect), the signed
    `effect` in % of Acc in the intended direction (RAC, negative on a Fail) and of Com
    (RCC), and `best` on the arm's best ratio (`best_ratio`), which alone gets a paired
    bootstrap 95 % interval of its signed Acc/Com change over examples (`metrics.change_ci`:
    `acc_low`, `acc_high`, `com_low`, `com_high`, in % of the base, signed as the change).
    `tags` (task=...) are copied into every row.
    """
    from .metrics import change_ci, relative_change

    order = {u: i for i, u in enumerate(dict.fromkeys(base.uids))}
    ids = [order[u] for u in base.uids]  # proxies of one example resampled together
    rows = []
    for arm, res in zip(arms, results):
        best = best_ratio(base, res, arm.mode)
        direction = "up" if arm.mode == "enhance" else "down"
        for i, (ratio, r) in enumerate(zip(arm.ratios, res)):
            rac, rcc = relative_change(base.acc, r.acc, direction), relative_change(base.com, r.com, direction)
            n_good, n_bad = (len(x) for x in split_budget(arm.good, arm.bad, arm.budget, ratio))
            row = dict(tags, method=arm.name, mode=arm.mode, budget=arm.budget, ratio=ratio, n_good=n_good,
                       n_bad=n_bad, acc=r.acc, com=r.com, base_acc=base.acc, base_com=base.com,
                       rac=rac.value, rcc=rcc.value, fail=rac.fail or rcc.fail,
                       effect_acc=-rac.value if rac.fail else rac.value,
                       effect_com=-rcc.value if rcc.fail else rcc.value,
                       best=i == best)
            if i == best:
                for metric in ("acc", "com"):
                    _, low, high = change_ci(base.correct, r.correct, ids, metric, n_resamples, seed=seed)
                    row[f"{metric}_low"], row[f"{metric}_high"] = low, high
            rows.append(row)
    return rows


# ---------------------------------------------------------------- restricted fine-tuning

class NeuronParam(NamedTuple):
    """Neuron i of a layer owns `param.narrow(dim, offset + i, 1)`."""
    param: nn.Parameter
    dim: int
    offset: int


def neuron_parameters(model: nn.Module, site: Site, layer: int) -> list[NeuronParam]:
    """The FFN parameters of `layer` and the dim along which neuron i owns slice i
    (the unit i of the FFN: its input row(s), bias and output column). Absent biases
    are skipped. Same for both FFN sites (ffn.mid, ffn.up index the same FFN units)."""
    if not site.name.startswith("ffn."):
        raise ValueError(f"restricted fine-tuning trains FFN units: use site ffn.mid or ffn.up, not {site.name!r}")
    out = []
    for path, dim, offset in family_of(model).neuron_params:
        try:
            p = model.get_parameter(f"{site.layers_path}.{layer}.{path}")
        except AttributeError:
            if path.endswith(".bias"):
                continue
            raise
        assert p.shape[dim] >= (offset + 1) * site.n_inner, f"{path}: dim {dim} of {tuple(p.shape)} cannot hold {site.n_inner} neurons"
        out.append(NeuronParam(p, dim, offset * site.n_inner))
    return out


@contextmanager
def zeroed(lm: LM, site: Site | str, neurons):
    """Inside the block the given FFN neurons' weights are 0 (CNL §5.4 'Erase': set their
    parameters to 0); restored on exit. Their activation is then 0 at every position, as
    `erase` at positions="all" gives, but the model stays a plain model, so cached-prefix
    read-outs (`evaluate_options` at positions="last") run at the cost of an unedited one."""
    site = lm.site(site) if isinstance(site, str) else site
    saved = []
    with torch.no_grad():
        for layer, idx in _layer_dict(neurons, site).items():
            for p, dim, offset in neuron_parameters(lm.model, site, layer):
                index = torch.as_tensor(idx, dtype=torch.long, device=p.device) + offset
                saved.append((p, dim, index, p.index_select(dim, index).clone()))
                p.index_fill_(dim, index, 0.0)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, dim, index, old in reversed(saved):
                p.index_copy_(dim, index, old)


def random_neurons(site: Site, count: int, seed: int = 0) -> dict[int, list[int]]:
    """`count` neurons drawn uniformly without replacement from all n_layers * n_inner
    (CNL §5.4 'Random': as many neurons as located, anywhere in the model)."""
    g = torch.Generator().manual_seed(seed)
    return _layer_dict(torch.randperm(site.n_neurons, generator=g)[:count], site)


def _trainable(model: nn.Module, site: Site, neurons: dict[int, list[int]], without: bool):
    """[(param, bool mask of the frozen slices, broadcastable to param)].

    located: the neurons' slices in their layers. without: every FFN neuron of every
    layer except the given ones (whose weights are zeroed here)."""
    masks: dict[int, tuple[nn.Parameter, int, torch.Tensor]] = {}
    for layer in (range(site.n_layers) if without else neurons):
        idx = torch.as_tensor(neurons.get(layer, []), dtype=torch.long)
        for p, dim, offset in neuron_parameters(model, site, layer):
            mask = masks.setdefault(id(p), (p, dim, torch.zeros(p.shape[dim], dtype=torch.bool)))[2]
            own = torch.zeros(site.n_inner, dtype=torch.bool)
            own[idx] = True
            mask[offset:offset + site.n_inner] = ~own if without else own
            if without:
                with torch.no_grad():  # CNL 'W/o located': set their parameters to 0
                    p.narrow(dim, offset, site.n_inner).index_fill_(dim, idx.to(p.device), 0.0)
    out = []
    for p, dim, mask in masks.values():
        shape = [1] * p.ndim
        shape[dim] = -1
        out.append((p, ~mask.to(p.device).view(shape)))
    return out


@contextmanager
def slice_deltas(model: nn.Module, site: Site, neurons: dict[int, list[int]]):
    """Yields (deltas, fold): trainable deltas `[param's slice shape]` on the neurons' slices
    of their FFN weights (`neuron_parameters`), added by forward hooks, and fold() that adds
    each delta into its slice and zeroes it. A weight slice's delta D adds x @ D^T to the
    neurons' outputs (rows of an output projection, a bias) or x[..., neurons] @ D^T to the
    module's output (columns of the down projection; GPT-2's Conv1D in its [in, out] layout).
    Autograd then computes the gradient of the small deltas only, not of the whole matrices;
    with fold() after each optimiser step the deltas are 0 at every forward (the gradient in
    D at 0 is the gradient in the slice) and the weights always hold the trained model.
    On exit: fold(), and the hooks are removed."""
    owner = {id(p): (m, name) for m in model.modules() for name, p in m.named_parameters(recurse=False)}
    specs: dict[nn.Module, list] = {}
    deltas = []
    for layer, idx in neurons.items():
        for p, dim, offset in neuron_parameters(model, site, layer):
            index = torch.as_tensor(idx, dtype=torch.long, device=p.device) + offset
            delta = torch.zeros_like(p.index_select(dim, index)).requires_grad_(True)
            module, name = owner[id(p)]
            specs.setdefault(module, []).append((p, name, dim, index, delta))
            deltas.append(delta)

    def hook(module, args, y):
        x, linear = args[0], isinstance(module, nn.Linear)  # Linear: W [out, in]; Conv1D: W [in, out]
        for _, name, dim, index, delta in specs[module]:
            if name == "bias":
                y = y.index_add(-1, index, delta.to(y.dtype).expand(*y.shape[:-1], -1))
            elif dim == (0 if linear else 1):  # the slice's units are outputs of this module
                y = y.index_add(-1, index, x @ (delta.T if linear else delta))
            else:  # inputs: the units feed this module
                y = y + x.index_select(-1, index) @ (delta.T if linear else delta)
        return y

    @torch.no_grad()
    def fold() -> None:
        for entries in specs.values():
            for p, _, dim, index, delta in entries:
                p.index_add_(dim, index, delta.to(p.dtype))
                delta.zero_()

    handles = [m.register_forward_hook(hook) for m in specs]
    try:
        yield deltas, fold
    finally:
        for h in handles:
            h.remove()
        fold()


def restricted_finetune(lm: LM, site: Site | str, neurons, batches, lr: float = 1e-5, epochs: int = 1,
                        mode: str = "located", seed: int = 0, progress: bool = True,
                        after_epoch: Callable[[int], None] | None = None,
                        after_step: Callable[[float], None] | None = None, sparse: bool = True) -> list[float]:
    """Fine-tune only the FFN weights of chosen neurons (CNL §5.4 'Enhance'), in place.

    neurons: the located set (dict / bool mask / flat ids). mode:
      "located"  train the located neurons' rows/columns (`neuron_parameters`);
      "random"   as many neurons drawn uniformly over all layers (`random_neurons(seed)`);
      "without"  zero the located neurons' weights and train the FFN weights of every
                 other neuron (attention, embeddings and norms stay frozen, so the
                 comparison is FFN neurons vs FFN neurons).
    batches: re-iterable of (input_ids, attention_mask, labels) `[batch, seq]`, labels
      -100 on prompt and pad tokens (see `answer_batches`).
    Adam has no weight decay and only the trainable slices move, so every other weight stays
    bitwise unchanged. sparse ("located", "random"): Adam trains deltas of the slices alone
    (`slice_deltas`: the gradient of the small deltas only, added into the weights after each
    step); else, and always for "without", the whole FFN matrices have gradients, masked to
    the trainable slices (the same steps up to rounding). The model stays in eval mode.
    after_epoch(e): called after epoch e (1-based), e.g. to evaluate the model at epochs 1, 5
    and 10 of one run (CNL Tab. 2) without restarting Adam; after_step(loss): after each step.
    The loss is `answer_loss` (the head runs on the answer positions only).
    Returns the mean loss of each epoch. Copy the model first to keep the original.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    site = lm.site(site) if isinstance(site, str) else site
    model, located = lm.model, _layer_dict(neurons, site)
    if mode == "random":
        located = random_neurons(site, len({(l, i) for l, idx in located.items() for i in idx}), seed)
    batches = list(batches) if iter(batches) is batches else batches  # a generator would be spent after epoch 1
    if not located:
        raise ValueError("restricted_finetune got an empty neuron set: nothing to locate the training on")
    if lm.dtype in (torch.bfloat16, torch.float16):
        log.warning("fine-tuning %s weights: Adam steps of lr=%g may round to zero; load the model in float32", lm.dtype, lr)
    sparse = sparse and mode != "without"
    trainable = [] if sparse else _trainable(model, site, located, without=mode == "without")
    handles = []
    with ExitStack() as stack:  # on exit (also on an exception from a callback) the deltas are folded into the weights
        params, fold = stack.enter_context(slice_deltas(model, site, located)) if sparse else \
            ([p for p, _ in trainable], lambda: None)
        stack.callback(_release, model, trainable, handles)
        for p, frozen in trainable:
            p.requires_grad_(True)
            handles.append(p.register_hook(lambda g, frozen=frozen: g.masked_fill(frozen, 0.0)))
        opt = torch.optim.Adam(params, lr=lr, weight_decay=0.0)
        losses = []
        with tqdm(total=epochs * len(batches), desc=f"finetune ({mode})", disable=not progress) as bar:
            for _ in range(epochs):
                total = 0.0
                for input_ids, attention_mask, labels in batches:
                    loss = answer_loss(lm, input_ids, attention_mask, labels)
                    loss.backward()
                    opt.step()
                    fold()  # the weights hold every step taken (a no-op without slice deltas)
                    opt.zero_grad(set_to_none=True)
                    value = loss.item()
                    total += value
                    if after_step is not None:
                        after_step(value)
                    bar.update()
                    bar.set_postfix(loss=f"{value:.4f}")
                losses.append(total / max(len(batches), 1))
                if after_epoch is not None:
                    after_epoch(len(losses))
        return losses


def _release(model: nn.Module, trainable: list, handles: list) -> None:
    """Undo `restricted_finetune`'s gradient set-up: hooks removed, gradients dropped, frozen."""
    for h in handles:
        h.remove()
    for p, _ in trainable:
        p.grad = None
    model.requires_grad_(False)


def answer_loss(lm: LM, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The causal-LM loss of `model(..., labels=labels).loss` (mean cross-entropy over the
    tokens whose label is not -100, each predicted from the position before it) with the
    vocabulary head run only from the first labelled position on. Rows are left padded and
    labelled only on their answer (`answer_batches`), so on a prompt of ~100 tokens and an
    answer of a few the head, ~20 % of a small model's forward and backward, runs on a few
    positions instead of all."""
    input_ids, attention_mask, labels = input_ids.to(lm.device), attention_mask.to(lm.device), labels.to(lm.device)
    labelled = (labels != -100).any(0).nonzero()
    if len(labelled) == 0:
        raise ValueError("answer_loss got a batch with no labelled token: nothing to train on")
    first = max(int(labelled[0]), 1)  # labels[:, 0] is never predicted
    keep = labels.shape[1] - first + 1  # logits from position first - 1 on
    out = lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                   **logits_from(lm.model, keep))
    logits = out.logits[:, -keep:]  # a model without logits_to_keep returns every position
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, first:].reshape(-1),
                           ignore_index=-100)


def answer_batches(lm: LM, examples, batch_size: int = 8, chat: bool = False):
    """Training batches for `restricted_finetune`: list of (input_ids, attention_mask, labels).

    examples: MCQuestions (prompt = render(q), answer = " " + its label, or its option text
    under a cloze read-out) or
    (prompt, answer) string pairs. Rows are left padded; labels = -100 on the prompt
    (its tokens as encoded alone) and on padding, so the loss is on the answer only.
    """
    tok, pairs = lm.tokenizer, []
    for ex in examples:
        if isinstance(ex, MCQuestion):
            ex = (render(ex, tok, chat=chat), " " + (ex.answer_label if ex.readout == "letter" else ex.answer_text))
        pairs.append(ex)
    out = []
    for start in range(0, len(pairs), batch_size):
        rows = []
        for prompt, answer in pairs[start:start + batch_size]:
            n_prompt = len(tok(prompt)["input_ids"])
            ids = tok(prompt + answer)["input_ids"]
            rows.append((ids, [-100] * n_prompt + ids[n_prompt:]))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for r, (ids, lab) in enumerate(rows):
            input_ids[r, width - len(ids):] = torch.tensor(ids)
            mask[r, width - len(ids):] = 1
            labels[r, width - len(ids):] = torch.tensor(lab)
        out.append((input_ids, mask, labels))
    return out
