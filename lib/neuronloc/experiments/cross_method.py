"""Notebook 07: every localizer of the three papers on one model under one protocol (ours, no paper).

  method_seeds       the seeds a method is located with (RANDOM several, the others one)
  as_examples        multiple-choice questions as CNL's free-form (prompt, gold answer) examples
  fill_to_k          a method's own selection, topped up (or trimmed) to exactly K by its own ranking
  run_locate         one method on one identification set: K neurons, its own count, its passes
  answers            every evaluation question answered under every condition (correct, answered option)
  evaluation_set     the evaluation questions: class-balanced where every question has the same labels
  pairs              which sets of identification sets A and B a method's stability IoU compares
  conditions_for     the Deg / Enh (and Deg± / Enh±) edits of every located set of one task
  collapse_of        the share of questions given the modal answer (option text or position)
  intervention_rows  per condition: signed RAC with its interval, collapse share and flag
  all_collapsed      the (task, op) where every method collapses: not evidence
  versus_random      per method and op: RAC(method) - RAC(RANDOM), RANDOM's seeds a level
  leaders            per task and op: the strongest method against each other one, paired
  summary            per method and op: mean RAC over the counted tasks and interval counts
  interleaved_seconds / cost_table   cost per question from interleaved repetitions
  conclusions / cost_conclusions     the notebook's conclusions, rendered from those tables

A located set is the dict `run_locate` returns (and the notebook caches whole):
{"good", "bad": ranked flat ids (good exactly `k`; bad `k` or empty for methods without a bad set),
"selected": how many of good the method's own rule picked, "seconds", "forward", "backward":
cost per question}. The notebook keeps them in `located[task, method, part, seed]`, part "A" or "B".

Every interval is `metrics.bootstrap_ci` over evaluation questions (paired: all conditions of a
task answer the same questions); a comparison with RANDOM also resamples RANDOM's seeds.
An interval "excludes 0" the intended way when it lies below 0 for a Deg op (the edit lowered
accuracy) and above 0 for an Enh op; the other way is the wrong way.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..hooks import Edit, count_passes, excite, silence
from ..interventions import degrader, enhancer, evaluate_conditions
from ..localization import METHODS, locate
from ..metrics import bootstrap_ci, collapse_share, unit_mean_ci
from ..models import LM
from ..neurons import to_layer_dict
from ..report import rounded
from ..sites import Site
from ..store import Store
from ..tasks import balance, render
from ..tasks.core import MCQuestion
from ..tasks.loaders import Example

COLLAPSE = 0.9  # a condition answering one label for >= 90 % of questions where the base does not (issue 19)
FILL = {"kn": "its mean IG score", "cnl": "|Eq. 7 score|"}  # methods whose own rule may pick fewer than K
NAMES = {"ace": "ACE", "tn": "TN", "qrnca": "QRNCA", "kn": "KN", "cnl": "CNL", "neurgrad": "NeurGrad",
         "act": "ACT", "random": "RANDOM"}


def method_seeds(method: str, random_seeds: int) -> list[int]:
    """Seeds `method` is located with: 0..random_seeds-1 for RANDOM (each seed one draw), [0] for
    the others (they are deterministic given the questions)."""
    return list(range(random_seeds)) if method == "random" else [0]


def as_examples(questions: Sequence[MCQuestion], tokenizer) -> list[Example]:
    """CNL takes (prompt, answer): each question as the prompt of its read-out and its gold
    continuation (the answer's label under the letter read-out, else the answer's option text)."""
    return [Example(render(q, tokenizer, readout=q.readout), q.answer_label if q.readout == "letter" else q.answer_text,
                    q.uid) for q in questions]


def fill_to_k(ids: torch.Tensor, ranking: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly `k` flat ids: the method's own ranked selection `ids` (trimmed to k), then, if it
    picked fewer, the best remaining neurons by `ranking` (`[layer, neuron]`, higher first; ties
    by flat id) - the same budget for every method (issue 21: KN's threshold picks the set, the
    rest is topped up by score)."""
    ids = ids[:k]
    if len(ids) >= k:
        return ids
    order = torch.argsort(-ranking.flatten().double(), stable=True)
    free = torch.ones(ranking.numel(), dtype=torch.bool)
    free[ids] = False
    return torch.cat([ids, order[free[order]][:k - len(ids)]])


def run_locate(lm: LM, method: str, questions: Sequence[MCQuestion], k: int, steps: int | None,
               seed: int = 0, store: Store | None = None) -> dict:
    """Locate `method`'s top-k neurons on `questions` (`localization.locate`; CNL on `as_examples`).

    Returns {"good": exactly k ranked flat ids (KN's count-based and CNL's sigma-mask selections
    topped up by `fill_to_k` with the method's own score, `FILL`), "bad": ranked flat ids `[k]` or
    empty, "selected": how many of good the method's own rule picked (<= k), "seconds": wall
    seconds, "forward", "backward": the model's passes (`hooks.count_passes`, a batched pass
    counts once)}, each cost per question; RANDOM reads no question, so its cost is that of its
    one draw. store: per-question score cache (`locate`'s; KN then reuses QRNCA's IG scores, same
    target): the cost of a cached run is not the method's, so time without it.
    """
    spec = METHODS[method]
    data = as_examples(questions, lm.tokenizer) if spec.free_form else questions
    start = time.perf_counter()
    with count_passes(lm.model) as passes:
        found = locate(lm, data, method, k=k, seed=seed, steps=steps, progress=False, store=store)
    seconds = time.perf_counter() - start
    n = len(questions) if spec.per_question else 1
    own = found.good[:k]
    ranking = found.scores.abs() if method == "cnl" else found.scores
    return {"good": fill_to_k(own, ranking, k), "bad": found.bad[:k], "selected": len(own), "seconds": seconds / n,
            "forward": passes.forward / n, "backward": passes.backward / n}


def fixed_labels(questions: Sequence[MCQuestion]) -> bool:
    """True when every question offers the same option texts (sentiment, NER, ...): a constant
    answer is then one label, and an evaluation set must be balanced over the labels."""
    return len({frozenset(q.options) for q in questions}) == 1


def evaluation_set(questions: Sequence[MCQuestion], n: int, seed: int = 0) -> list[MCQuestion]:
    """At most `n` evaluation questions: for a fixed-label task the largest class-balanced set
    (`tasks.balance`, equal questions per gold label) of at most n; otherwise the first n (their
    options differ per question, so no label can be answered always)."""
    questions = list(questions)
    if not fixed_labels(questions):
        return questions[:n]
    counts = pd.Series([q.options[q.answer] for q in questions]).value_counts()
    return balance(questions, n=min(n, int(counts.min()) * len(counts)), seed=seed)


def task_sets(questions: Sequence[MCQuestion], readout: str, competent: bool, n_ident: int, n_eval: int,
              seed: int = 0) -> dict:
    """A task's question sets after its competence questions, read out by `readout`:
    {"A", "B": the two identification sets of `n_ident` (disjoint, in order), "eval": the
    `evaluation_set` of at most `n_eval` from the rest, "readout", "competent"}."""
    def read(qs):
        return [replace(q, readout=readout) for q in qs]
    rest = list(questions)
    return dict(A=read(rest[:n_ident]), B=read(rest[n_ident:2 * n_ident]),
                eval=read(evaluation_set(rest[2 * n_ident:], n_eval, seed)), readout=readout, competent=competent)


def pairs(method: str, random_seeds: int) -> list[tuple[int, int]]:
    """(seed of the set on A, seed of the set on B) that the stability IoU compares: (0, 0) for a
    method that reads the data; RANDOM ignores the data, so its A and B sets differ only by seed:
    each seed s is paired with the next, (s, s + 1 mod random_seeds)."""
    n = random_seeds
    return [(s, (s + 1) % n) for s in range(n)] if method == "random" else [(0, 0)]


def conditions_for(located: dict, task: str, methods: Sequence[str], random_seeds: int, site: Site,
                   k: int) -> dict[str | tuple[str, int, str], list[Edit]]:
    """Every condition evaluated on `task`, from the sets located on identification set A.

    Returns {"base": [] (no edit), (method, seed, op): edits}, in the order methods x seeds x ops,
    op "Deg" (silence the good set) and "Enh" (double it, NeuronLLM §3.5) for every method, and
    for a method with a bad set also "Deg±" / "Enh±" (`degrader` / `enhancer`) on the top k/2
    good + top k/2 bad neurons: one fixed ratio, not picked on the evaluation data.
    located: {(task, method, part, seed): a `run_locate` result}.
    """
    conditions: dict = {"base": []}
    half = k // 2
    for method in methods:
        for seed in method_seeds(method, random_seeds):
            found = located[task, method, "A", seed]
            good = to_layer_dict(found["good"], site.shape)
            conditions[method, seed, "Deg"] = silence(good)
            conditions[method, seed, "Enh"] = excite(good)
            if len(found["bad"]):
                conditions[method, seed, "Deg±"] = degrader(found["good"][:half], found["bad"][:half], site)
                conditions[method, seed, "Enh±"] = enhancer(found["good"][:half], found["bad"][:half], site)
    return conditions


def answers(lm: LM, questions: Sequence[MCQuestion], conditions: Sequence[Sequence[Edit]], site: Site,
            readout: str) -> dict:
    """Every question answered under every condition (`interventions.evaluate_conditions`):
    {"correct": [condition] bool `[question]`, "pred": [condition] answered option index `[question]`}."""
    out = evaluate_conditions(lm, questions, list(conditions), site, readout=readout, progress=False)
    return {"correct": [r.correct for r in out], "pred": [r.pred for r in out]}


# ---------------------------------------------------------------- intervals and collapse

def collapse_of(questions: Sequence[MCQuestion], pred) -> float:
    """Share of questions given the modal answer: the larger of the modal option text's share
    and the modal position's (`metrics.collapse_share` of each), the two constant answers
    `interventions.trivial_accuracy` considers."""
    pred = [int(p) for p in pred]
    return max(collapse_share([q.options[p] for q, p in zip(questions, pred)]), collapse_share(pred))


def _rac(base, edited) -> float:
    """Signed RAC (%) of edited against base: 100 (mean(edited) - mean(base)) / mean(base)."""
    b = np.mean(base)
    return 100 * (np.mean(edited) - b) / b if b > 0 else np.nan


def side(lo: float, hi: float) -> str:
    """Where an interval lies: "below 0", "above 0", "contains 0" (or "no interval")."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval"
    return "below 0" if hi < 0 else "above 0" if lo > 0 else "contains 0"


def way(op: str, where: str) -> str:
    """"right" when the interval excludes 0 the way `op` should move accuracy (Deg: below,
    Enh: above), "wrong" when it excludes 0 the other way, "" when it does not exclude 0."""
    want = "below 0" if op.startswith("Deg") else "above 0"
    return "right" if where == want else "wrong" if where in ("below 0", "above 0") else ""


def intervention_rows(task: str, questions: Sequence[MCQuestion], keys: Sequence, correct, pred,
                      n_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """One row per condition of `task` but the base (keys[0] == "base").

    correct: `[condition, question]` bool; pred: `[condition, question]` answered option index.
    Row: task, method, seed, op, n (questions), base_acc, acc, rac with low / high (signed RAC
    in %, `bootstrap_ci` over questions, paired with the base), side (of the interval), way
    ("right" / "wrong" / ""), collapse (share of the modal answer, `collapse_of`), base_collapse,
    collapsed (collapse >= 0.9 > base_collapse).
    """
    correct = np.asarray(correct, dtype=float)
    pred = np.asarray(pred)
    assert keys[0] == "base", "the first condition must be the unedited base"
    base_collapse = collapse_of(questions, pred[0])
    rows = []
    for i, (method, s, op) in enumerate(keys[1:], start=1):
        v, lo, hi = bootstrap_ci(_rac, correct[0], correct[i], n_resamples=n_resamples, seed=seed)
        share = collapse_of(questions, pred[i])
        where = side(lo, hi)
        rows.append(dict(task=task, method=method, seed=s, op=op, n=len(questions), base_acc=correct[0].mean(),
                         acc=correct[i].mean(), rac=v, low=lo, high=hi, side=where, way=way(op, where),
                         collapse=share, base_collapse=base_collapse,
                         collapsed=bool(share >= COLLAPSE > base_collapse)))
    return rows


def all_collapsed(changes: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, op) where the condition of every method but RANDOM is flagged `collapsed`: the
    methods there only move the model between constant answers, so that task is no evidence for
    that op (issue 19)."""
    methods = changes[changes.method != "random"]
    flags = methods.groupby(["task", "op"], sort=False).collapsed.all()
    return [idx for idx, every in flags.items() if every]


def versus_random(task: str, keys: Sequence, correct, n_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """Per method but RANDOM and op of `task`: RAC(method) - RAC(RANDOM) in % points, RANDOM's
    RAC the mean over its seeds, with `bootstrap_ci` over questions (paired) and RANDOM's seeds
    as a second level. Row: task, method, op, diff, low, high, side, way (for a Deg op, "right"
    = lowers accuracy more than RANDOM)."""
    correct = np.asarray(correct, dtype=float)
    index = {key: i for i, key in enumerate(keys)}
    rows = []
    for key in keys[1:]:
        method, _, op = key
        seeds = [i for k_, i in index.items() if k_ != "base" and k_[0] == "random" and k_[2] == op]
        if method == "random" or not seeds:
            continue
        stat = lambda b, m, r: _rac(b, m) - _rac(b, r)  # RAC(RANDOM) over all its seeds' rows = mean of seeds
        v, lo, hi = bootstrap_ci(stat, correct[0], correct[index[key]], correct[seeds], n_resamples=n_resamples,
                                 seed=seed)
        where = side(lo, hi)
        rows.append(dict(task=task, method=method, op=op, diff=v, low=lo, high=hi, side=where, way=way(op, where)))
    return rows


def leaders(task: str, keys: Sequence, correct, ops: Sequence[str] = ("Deg", "Enh"), n_resamples: int = 1000,
            seed: int = 0) -> list[dict]:
    """Per op of `task`: the method (RANDOM excluded) with the strongest RAC the intended way
    (lowest for Deg, highest for Enh; ties: the first), against every other method: the paired
    difference RAC(leader) - RAC(other) in % points with `bootstrap_ci` over questions. Row:
    task, op, leader, other, leader_rac, other_rac, diff, low, high, side, way ("right" = the
    leader's lead is resolved), the others in order of their RAC (runner-up first)."""
    correct = np.asarray(correct, dtype=float)
    rows = []
    for op in ops:
        cand = [(k_[0], i) for i, k_ in enumerate(keys) if k_ != "base" and k_[0] != "random" and k_[2] == op]
        if len(cand) < 2:
            continue
        racs = {m: _rac(correct[0], correct[i]) for m, i in cand}
        sign = -1 if op.startswith("Deg") else 1
        ranked = sorted(cand, key=lambda c: -sign * racs[c[0]])  # stable: ties keep the method order
        (lead, li), others = ranked[0], ranked[1:]
        for other, oi in others:
            v, lo, hi = bootstrap_ci(lambda b, x, y: _rac(b, x) - _rac(b, y), correct[0], correct[li], correct[oi],
                                     n_resamples=n_resamples, seed=seed)
            where = side(lo, hi)
            rows.append(dict(task=task, op=op, leader=lead, other=other, leader_rac=racs[lead], other_rac=racs[other],
                             diff=v, low=lo, high=hi, side=where, way=way(op, where)))
    return rows


def _kept(df: pd.DataFrame, drop) -> np.ndarray:
    """Bool mask of the rows of `df` whose (task, op) is not in `drop`."""
    return np.array([(t, o) not in drop for t, o in zip(df.task, df.op)], dtype=bool)


def summary(changes: pd.DataFrame, versus: pd.DataFrame | None = None,
            excluded: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """Per method and intervention over the tasks counted: the competent ones (column
    `competent`, when present), less the (task, op) in `excluded` (`all_collapsed`).

    changes: `intervention_rows` rows (task, method, seed, op, rac, way, collapsed).
    Returns one row per (method, op), in order of first appearance: "tasks" counted, "rac" the
    mean over tasks of the per-task RAC (RANDOM: the mean over its seeds per task), "right way"
    / "wrong way": how many intervals exclude 0 the intended / the other way, as "k/n" (a
    method: its n per-task intervals; RANDOM: every (task, seed) interval), "collapsed": how
    many of them are flagged collapse, and "beats RANDOM": how many of the method's
    `versus_random` intervals exclude 0 the intended way ("" for RANDOM).
    """
    out = []
    counted = changes[changes.competent] if "competent" in changes else changes
    drop = set(map(tuple, excluded))
    counted = counted[_kept(counted, drop)]
    for (method, op), group in counted.groupby(["method", "op"], sort=False):
        by_task = group.groupby("task", sort=False).rac.mean()
        n = len(group)
        row = dict(method=method, op=op, tasks=len(by_task), rac=by_task.mean(),
                   **{"right way": f"{int((group.way == 'right').sum())}/{n}",
                      "wrong way": f"{int((group.way == 'wrong').sum())}/{n}",
                      "collapsed": f"{int(group.collapsed.sum())}/{n}"})
        if versus is not None and method != "random":
            vs = versus[(versus.method == method) & (versus.op == op) & versus.task.isin(by_task.index)]
            row["beats RANDOM"] = f"{int((vs.way == 'right').sum())}/{len(vs)}"
        else:
            row["beats RANDOM"] = ""
        out.append(row)
    return pd.DataFrame(out)


# ---------------------------------------------------------------- cost

def interleaved_seconds(run: Callable[[str], object], methods: Sequence[str], repetitions: int = 5,
                        warmup: int = 1, clock: Callable[[], float] = time.perf_counter) -> pd.DataFrame:
    """Wall seconds of `run(method)` for every method, `repetitions` times interleaved (rep 0:
    every method once, rep 1: again, ..., the order rotated by one method per repetition), after
    `warmup` untimed rounds, so load on the machine hits every method alike (issue 19: timing
    from >= 5 interleaved repetitions in one run). Returns rows rep, method, seconds (and
    forward, backward when `run` returns a dict with them, as `run_locate` does)."""
    methods = list(methods)
    for _ in range(warmup):
        for m in methods:
            run(m)
    rows = []
    for rep in range(repetitions):
        shift = rep % len(methods)
        for m in methods[shift:] + methods[:shift]:
            t0 = clock()
            out = run(m)
            row = dict(rep=rep, method=m, seconds=clock() - t0)
            if isinstance(out, dict):
                row.update({c: out[c] for c in ("forward", "backward") if c in out})
            rows.append(row)
    return pd.DataFrame(rows)


def cost_table(times: pd.DataFrame, passes: pd.DataFrame, reference: str = "neurgrad", seed: int = 0) -> pd.DataFrame:
    """Cost per question of each method (index, in the order of `times`).

    times: `interleaved_seconds` rows (rep, method, seconds per question); passes: index method,
    columns forward, backward (per question, from the located sets). Columns: seconds with low /
    high (mean over repetitions, `unit_mean_ci` over repetitions), forward, backward, and
    "x ref" with low / high: the mean over repetitions of seconds / the reference method's
    seconds in the same repetition, with its interval.
    """
    wide = times.pivot(index="rep", columns="method", values="seconds")
    rows = {}
    for m in dict.fromkeys(times.method):
        s, lo, hi = unit_mean_ci(wide[m].to_numpy(), seed=seed)
        r, rlo, rhi = unit_mean_ci((wide[m] / wide[reference]).to_numpy(), seed=seed)
        rows[m] = dict(seconds=s, low=lo, high=hi, forward=passes.loc[m, "forward"], backward=passes.loc[m, "backward"],
                       **{"x ref": r, "x low": rlo, "x high": rhi})
    return pd.DataFrame.from_dict(rows, orient="index")


# ---------------------------------------------------------------- conclusions

def num(v) -> str:
    """A number as the conclusions state it: `report.rounded` (2 significant digits), no padding."""
    return f"{rounded(float(v)):g}"


def _ci(v, lo, hi, unit=" %") -> str:
    return f"{num(v)}{unit} [{num(lo)}, {num(hi)}]"


def _short(task: str) -> str:
    return task.split("/")[-1]


def _list(items: Sequence[str], none: str = "none") -> str:
    return "; ".join(items) if items else none


def conclusions(competence: pd.DataFrame, changes: pd.DataFrame, versus: pd.DataFrame, lead: pd.DataFrame,
                table: pd.DataFrame, jaccard: pd.DataFrame, stability: pd.DataFrame, k: int,
                chance_iou: float, selected: pd.DataFrame | None = None) -> str:
    """The notebook's conclusions (Markdown), every number read from the tables it names.

    competence: index task; columns "read-out", "acc" (under it), "best constant", "competent".
    changes: `intervention_rows` (competent tasks); versus: `versus_random`; lead: `leaders`;
    table: `summary`; jaccard: method x method (mean over tasks); stability: index method, column
    "mean"; selected: index method, columns min, max (the method's own count of its K, over the
    sets located). Numbers are written through `num` (2 significant digits).
    """
    lines = []
    comp = competence[competence.competent]
    left = [t for t in competence.index if t not in comp.index]
    parts = [f"{_short(t)} ({r['read-out']}, acc {num(r['acc'])} vs {num(r['best constant'])})"
             for t, r in comp.iterrows()]
    lines.append(f"- **Tasks.** {len(comp)} of {len(competence)} tasks beat the best constant answer under some "
                 f"read-out (acc vs the best constant answer): {_list(parts)}. Left out of everything below "
                 f"(no read-out beats a constant answer): {_list([_short(t) for t in left])}.")
    if not len(changes):
        lines.append("- **No task is left to intervene on**: nothing below is evidence.")
        return "\n".join(lines)
    base = changes.groupby("task", sort=False).agg(n=("n", "first"), base_acc=("base_acc", "first"))
    lines.append("- **Evaluation.** " + "; ".join(f"{_short(t)}: {int(r.n)} questions, unedited acc {num(r.base_acc)}"
                                                 for t, r in base.iterrows())
                 + ". Intervals: 95 % bootstrap over questions, paired.")
    if selected is not None:
        short = [f"{NAMES.get(m, m)} {int(r['min'])}-{int(r['max'])}" for m, r in selected.iterrows() if r["min"] < k]
        if short:
            lines.append(f"- **Budget.** Every method intervenes on K = {k} neurons. The own rule picked fewer for: "
                         f"{'; '.join(short)} (of K); the rest topped up by the method's own score.")
    # collapse
    excluded = all_collapsed(changes)
    flagged = changes[changes.collapsed]
    items = [f"{NAMES.get(r.method, r.method)}{'' if r.method != 'random' else f' seed {r.seed}'} {r.op} on "
             f"{_short(r.task)} ({num(r.collapse)})" for r in flagged.itertuples()]
    text = (f"- **Collapse** (one answer for >= {num(COLLAPSE * 100)} % of the questions where the unedited model "
            f"does not): {_list(items)}.")
    if excluded:
        text += " Every method collapses on: " + "; ".join(f"{_short(t)} {o}" for t, o in excluded) + \
                " - not counted as evidence."
    lines.append(text)
    drop = set(excluded)
    keep = changes[_kept(changes, drop)]
    # per op: every interval that excludes 0
    for op in dict.fromkeys(keep.op):
        rows = keep[(keep.op == op) & (keep.method != "random")]
        rand = keep[(keep.op == op) & (keep.method == "random")]
        right = [f"{NAMES.get(r.method, r.method)} on {_short(r.task)} {_ci(r.rac, r.low, r.high)}"
                 for r in rows.itertuples() if r.way == "right"]
        wrong = [f"{NAMES.get(r.method, r.method)} on {_short(r.task)} {_ci(r.rac, r.low, r.high)}"
                 for r in rows.itertuples() if r.way == "wrong"]
        rest = int((rows.way == "").sum())
        want = "lowers" if op.startswith("Deg") else "raises"
        lines.append(f"- **{op}** (signed RAC, 95 % CI). The interval excludes 0 the intended way ({want} accuracy) "
                     f"for {len(right)} of {len(rows)}: {_list(right)}. The wrong way for {len(wrong)}: "
                     f"{_list(wrong)}. It contains 0 for the other {rest}."
                     + (f" RANDOM: {int((rand.way == 'right').sum())} of {len(rand)} seeds' intervals the intended way, "
                        f"{int((rand.way == 'wrong').sum())} the wrong way." if len(rand) else ""))
    # against RANDOM
    if len(versus):
        vs = versus[_kept(versus, drop)]
        right = [f"{NAMES.get(r.method, r.method)} {r.op} on {_short(r.task)} {_ci(r.diff, r.low, r.high, ' pp')}"
                 for r in vs.itertuples() if r.way == "right"]
        wrong = [f"{NAMES.get(r.method, r.method)} {r.op} on {_short(r.task)} {_ci(r.diff, r.low, r.high, ' pp')}"
                 for r in vs.itertuples() if r.way == "wrong"]
        lines.append(f"- **Against RANDOM** (RAC(method) - RAC(RANDOM), RANDOM's seeds resampled too). Beyond RANDOM "
                     f"the intended way for {len(right)} of {len(vs)}: {_list(right)}. The wrong way for {len(wrong)}: "
                     f"{_list(wrong)}. The interval contains 0 for the other {len(vs) - len(right) - len(wrong)}.")
    # leaders
    if len(lead):
        lv = lead[_kept(lead, drop)]
        items = []
        for (task, op), g in lv.groupby(["task", "op"], sort=False):
            first = g.iloc[0]
            beaten = int((g.way == "right").sum())
            items.append(f"{_short(task)} {op}: {NAMES.get(first.leader, first.leader)} leads ({num(first.leader_rac)} %), "
                         f"ahead of {NAMES.get(first.other, first.other)} ({num(first.other_rac)} %) by "
                         f"{_ci(first['diff'], first['low'], first['high'], ' pp')} "
                         f"({'resolved' if first.way == 'right' else 'not resolved'}); the interval excludes 0 "
                         f"against {beaten} of the {len(g)} others")
        lines.append(f"- **Ranking.** {_list(items)}.")
    # means over tasks
    for op in ("Deg", "Enh"):
        t = table[table.op == op].sort_values("rac", ascending=op == "Deg")
        if len(t):
            lines.append(f"- **Mean {op} over the tasks counted** (RAC %): " +
                         ", ".join(f"{NAMES.get(r.method, r.method)} {num(r.rac)}" for r in t.itertuples()) + ".")
    # which neurons
    methods = [m for m in jaccard.index]
    pairs_ = sorted(((jaccard.loc[a, b], a, b) for i, a in enumerate(methods) for b in methods[i + 1:]
                     if "random" not in (a, b)), key=lambda x: -x[0])
    if pairs_:
        top = ", ".join(f"{NAMES.get(a, a)}-{NAMES.get(b, b)} {num(v)}" for v, a, b in pairs_[:3])
        low = ", ".join(f"{NAMES.get(a, a)}-{NAMES.get(b, b)} {num(v)}" for v, a, b in pairs_[-3:][::-1])
        lines.append(f"- **Which neurons.** Jaccard overlap of the top-{k} good sets (mean over tasks), highest: {top}"
                     + (f"; lowest: {low}." if len(pairs_) > 3 else "."))
    st = stability["mean"].sort_values(ascending=False)
    lines.append(f"- **Stability** (IoU of the sets from the two disjoint identification sets, mean over tasks): " +
                 ", ".join(f"{NAMES.get(m, m)} {num(v)}" for m, v in st.items()) +
                 f"; two random {k}-sets share {num(chance_iou)} in expectation.")
    return "\n".join(lines)


def cost_conclusions(cost: pd.DataFrame, minutes: float, repetitions: int, reference: str = "neurgrad") -> str:
    """The cost paragraph (Markdown) from `cost_table` and this run's wall minutes so far."""
    ref = NAMES.get(reference, reference)
    items = [f"{NAMES.get(m, m)} {_ci(r.seconds, r.low, r.high, ' s')} ({num(r.forward)} forward + "
             f"{num(r.backward)} backward passes)" + ("" if m == reference or not r["x ref"] > 0 else
                                                      f", {_ci(r['x ref'], r['x low'], r['x high'], 'x')} {ref}")
             for m, r in cost.iterrows()]
    return (f"- **Cost per question** (wall seconds, mean of {repetitions} interleaved repetitions on one question "
            f"with its 95 % CI; batched passes from `hooks.count_passes`; the run took {num(minutes)} min so far): "
            + "; ".join(items) + ".")
