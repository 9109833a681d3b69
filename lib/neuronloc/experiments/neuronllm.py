"""NeuronLLM (notebook 06): the arms, tables and claim rows behind good and bad neurons.

  arms_for        the arms of one task: Tables 1-3/6, 5 (common), Fig. 2/4 (task-specific), 7 (budgets)
  sig, cell       a number / a Table 1 cell as the paper prints it ("RAC/RCC" or "Fail")
  avg_effect      the mean signed RAC, RCC of a method over tasks (Table 1's Avg)
  table           Tables 1, 2, 3/6, 5: methods x (Deg|Enh, task) cells and Avg
  ablation        Tables 3 and 6: Good only, Bad only, Both rows of the swept arms
  bottom_share    Fig. 5-6: share of a neuron set in the bottom third of the layers
  answer_ce, control_result, ce_shifts
                  Fig. 10: cross-entropy of the correct option under each control
  TaskEval, task_eval, Result
                  what the claims need: per-example read-outs of every arm, the
                  neuron sets, competence, timing
  rac, effect     signed RAC of an arm on some examples (the best ratio chosen on the
                  other half of the examples for swept arms)
  claims          every NL-* claim as a claims.json row (estimate, interval, rule, verdict)
  protocol        what decided them (tasks, read-outs, sizes), for write_claims

Frames are `arm_rows` rows (one per arm and ratio: task, method, mode, ratio, acc, com,
rac, rcc, fail, effect_acc, effect_com, best, ...); `best` is those with best == True and
a `family` column (the method, RANDOM seeds merged). Tasks are named as in the "task"
column (the short name, "sentiment"); neuron sets are flat ids, best first (`neurons`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..claims import Claim, Estimate, measured, na
from ..interventions import Arm, OptionEval, best_ratio
from ..neurons import layer_counts
from . import sig

MODES = ("degrade", "enhance")  # NeuronLLM §3.5: degrader, enhancer (tables print Deg, Enh)
OPS = {"degrade": "Deg", "enhance": "Enh"}
BUDGET_METHODS = ("NeuronLLM", "TN", "QRNCA")  # Table 7: the methods swept over budgets K
CONTROL_RATIO = {"Good": 1.0, "Bad": 0.0}  # Tables 3/6: Good only = 100 % good, Bad only = 0 %
FIG10_CONTROLS = (("TN", "TN", "Good"), ("QRNCA", "QRNCA", "Good"), ("Good", "NeuronLLM", "Good"),
                  ("Bad", "NeuronLLM", "Bad"), ("Both", "NeuronLLM", "Both"))  # (label, arm, control)

Neurons = tuple[torch.Tensor, torch.Tensor]  # (good, bad): flat ids, best first; bad empty for good-only methods


# ---------------------------------------------------------------- arms (§4.4)

def arms_for(sets: Mapping[str, Neurons], common: Neurons, specific: Mapping[str, Neurons], budget: int,
             ratios: Sequence[float], side_ratios: Sequence[float], budgets: Sequence[int] = ()) -> list[Arm]:
    """Every arm evaluated on one task, per mode (degrade, then enhance):

    - one arm per method of `sets` ({method: (good, bad)}), at `budget`: a method with bad
      neurons sweeps `ratios` (NeuronLLM, the enabled TN / QRNCA), a good-only one has (1.0,);
    - "common": the common good and bad neurons (Table 5), at `side_ratios`;
    - "specific:<task>" for every task of `specific` (its task-specific neurons, Fig. 2/4);
    - "<method>@<K>" for each K of `budgets` and method of BUDGET_METHODS (Table 7; empty
      `budgets` on every task but the budget task).

    The order is part of `sweep_arms`' cache key: keep it.
    """
    arms = []
    for mode in MODES:
        for name, (good, bad) in sets.items():
            arms.append(Arm(name, mode, good, bad, budget, tuple(ratios) if len(bad) else (1.0,)))
        if len(common[0]) + len(common[1]):  # none with fewer than two tasks
            arms.append(Arm("common", mode, *common, budget, tuple(side_ratios)))
        for source, (good, bad) in specific.items():
            arms.append(Arm(f"specific:{source}", mode, good, bad, budget, tuple(side_ratios)))
        for k in budgets:
            for name in BUDGET_METHODS:
                good, bad = sets[name]
                arms.append(Arm(f"{name}@{k}", mode, good, bad, k, tuple(side_ratios) if len(bad) else (1.0,)))
    return arms


# ---------------------------------------------------------------- tables (Tables 1-3, 5-7)

def cell(row, rcc: bool = True) -> str:
    """A Table 1 cell of one `arm_rows` row: "RAC/RCC" in %, or "Fail" when either moved the
    wrong way (as the paper prints it); "RAC" alone with rcc=False (a text read-out, where
    RCC equals RAC)."""
    return "Fail" if row["fail"] else f"{sig(row['rac'])}/{sig(row['rcc'])}" if rcc else sig(row["rac"])


def avg_effect(frame: pd.DataFrame, method: str, mode: str, tasks: Sequence[str]) -> tuple[float, float]:
    """(mean signed RAC, mean signed RCC) in % of the rows of `method` (the `family` column)
    and `mode` over `tasks`; a Fail counts negative, so methods compare. (nan, nan) if none."""
    part = frame[(frame["family"] == method) & (frame["mode"] == mode) & frame["task"].isin(list(tasks))]
    return (part["effect_acc"].mean(), part["effect_com"].mean()) if len(part) else (np.nan, np.nan)


def table(frame: pd.DataFrame, methods: Sequence[str], tasks: Sequence[str], averaged: Sequence[str],
          rcc: bool = True) -> pd.DataFrame:
    """Tables 1, 2, 3/6, 5: a row per method (the `family` column of best-ratio rows), columns
    (Deg|Enh, task) for every task of `tasks`, then (Deg|Enh, "Avg") over `averaged` (the tasks
    the model does). A cell is `cell` of the method's one row; a method with several rows in a
    cell (RANDOM's seeds) shows the mean signed effect "RAC/RCC (mean of n)"."""
    out = {}
    for method in methods:
        row = {}
        for mode in MODES:
            op = OPS[mode]
            for t in tasks:
                part = frame[(frame["family"] == method) & (frame["mode"] == mode) & (frame["task"] == t)]
                pair = f"{sig(part['effect_acc'].mean())}/{sig(part['effect_com'].mean())}" if rcc else sig(part['effect_acc'].mean())
                row[(op, t)] = cell(part.iloc[0], rcc) if len(part) == 1 else f"{pair} (mean of {len(part)})"
            a, c = avg_effect(frame, method, mode, averaged)
            row[(op, "Avg")] = f"{sig(a)}/{sig(c)}" if rcc else sig(a)
        out[method] = row
    return pd.DataFrame(out).T


def ablation(frame: pd.DataFrame) -> pd.DataFrame:
    """Tables 3 and 6 from the rows of swept arms (every ratio, with 0.0 and 1.0 among them):
    per (task, method, mode) three rows, control "Good" (the ratio 1.0: good neurons only),
    "Bad" (0.0) and "Both" (the best ratio), with rac, rcc, fail, effect_acc, effect_com and
    the ratio, in the frame's order of (task, method, mode)."""
    out = []
    for (task, method, mode), part in frame.groupby(["task", "method", "mode"], sort=False):
        part = part.set_index("ratio")
        for name, r in (("Good", part.loc[1.0]), ("Bad", part.loc[0.0]), ("Both", part[part["best"]].iloc[0])):
            out.append({"task": task, "method": method, "mode": mode, "control": name, "rac": r["rac"], "rcc": r["rcc"],
                        "fail": r["fail"], "effect_acc": r["effect_acc"], "effect_com": r["effect_com"],
                        "ratio": r.name if name == "Both" else CONTROL_RATIO[name]})
    return pd.DataFrame(out)


# ---------------------------------------------------------------- where the neurons are (Fig. 5-7)

def bottom_share(neurons, shape: tuple[int, int]) -> float:
    """Share of `neurons` (any form `neurons.to_ids` takes) in the bottom third of the layers,
    layers 0 .. n_layers // 3 - 1 of `shape` = (n_layers, n_inner) (Fig. 5-6: the paper finds
    few there); nan for an empty set."""
    counts = layer_counts(neurons, shape).double()
    return (counts[:shape[0] // 3].sum() / counts.sum()).item() if counts.sum() > 0 else np.nan


# ---------------------------------------------------------------- option probabilities (Fig. 10)

def answer_ce(result: OptionEval) -> torch.Tensor:
    """Cross-entropy of the correct option, -log p(answer) over the option softmax, `[question]`
    (p clamped at 1e-12, so a zero probability gives 27.6, not inf)."""
    p = result.probs.gather(1, result.answer[:, None])[:, 0]
    return -p.clamp_min(1e-12).log()


def control_result(base: OptionEval, arms: Sequence[Arm], results: Sequence[Sequence[OptionEval]],
                   name: str, mode: str, control: str) -> OptionEval:
    """The read-out of arm `name` under `mode` at a control's ratio: "Good" (1.0; a good-only
    arm's one ratio), "Bad" (0.0) or "Both" (its best ratio, `best_ratio`). arms, results: as
    given to and returned by `sweep_arms` on the questions of `base`."""
    i = next(j for j, a in enumerate(arms) if a.name == name and a.mode == mode)
    at = best_ratio(base, results[i], mode) if control == "Both" else arms[i].ratios.index(CONTROL_RATIO[control])
    return results[i][at]


def ce_shifts(base: OptionEval, arms: Sequence[Arm], results: Sequence[Sequence[OptionEval]],
              controls: Sequence[tuple[str, str, str]] = FIG10_CONTROLS) -> pd.DataFrame:
    """Fig. 10 as a long frame (control, mode, ce): per mode, the cross-entropy of the correct
    option of every question unedited ("original"), then under each (label, arm, control) of
    `controls` (`control_result`)."""
    rows = []
    for mode in MODES:
        rows += [{"control": "original", "mode": mode, "ce": v} for v in answer_ce(base).tolist()]
        for label, name, control in controls:
            ce = answer_ce(control_result(base, arms, results, name, mode, control))
            rows += [{"control": label, "mode": mode, "ce": v} for v in ce.tolist()]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- results for the claims

@dataclass
class TaskEval:
    """One task's evaluation set as the claims need it: per example (QATT proxies averaged),
    the unedited share of proxies right (`base`, `[example]`) and, per arm (name, mode), its
    ratios and the share right under each ratio (`[ratio, example]`); `collapse` marks the
    (name, mode) whose in-sample best ratio answers one label for >= 90 % of the questions
    where the unedited model does not (`metrics.collapsed`)."""

    base: np.ndarray
    arms: dict
    collapse: dict = field(default_factory=dict)
    shares: dict = field(default_factory=dict)  # (name, mode) -> collapse share at the best ratio

    @property
    def n(self) -> int:
        return len(self.base)


def per_example(result: OptionEval) -> np.ndarray:
    """Share of each example's proxies answered right, `[example]` in order of first uid."""
    order = {u: i for i, u in enumerate(dict.fromkeys(result.uids))}
    right, count = np.zeros(len(order)), np.zeros(len(order))
    for u, ok in zip(result.uids, result.correct.tolist()):
        right[order[u]] += ok
        count[order[u]] += 1
    return right / count


def answer_texts(questions, result: OptionEval) -> list[str]:
    """The option text each question (proxy) was answered with; one per example (its first
    proxy: under a text read-out the proxies answer alike)."""
    seen, out = set(), []
    for q, p in zip(questions, result.pred.tolist()):
        if q.uid not in seen:
            seen.add(q.uid)
            out.append(q.options[p])
    return out


def task_eval(questions, base: OptionEval, arms: Sequence[Arm], results: Sequence[Sequence[OptionEval]]) -> TaskEval:
    """`TaskEval` of one `sweep_arms` run on `questions` (in the order sweep_arms returns them)."""
    from ..metrics import collapse_share, collapsed

    if [q.uid for q in questions] != list(base.uids):
        raise ValueError("task_eval: questions are not in the order of the read-outs")
    base_answers = answer_texts(questions, base)
    out, flags, shares = {}, {}, {}
    for arm, res in zip(arms, results):
        out[arm.name, arm.mode] = (tuple(arm.ratios), np.stack([per_example(r) for r in res]))
        b = res[best_ratio(base, res, arm.mode)]
        answers = answer_texts(questions, b)
        shares[arm.name, arm.mode] = collapse_share(answers)
        flags[arm.name, arm.mode] = collapsed(answers, base_answers)
    return TaskEval(per_example(base), out, flags, shares)


@dataclass
class Result:
    """What notebook 06 measured, for `claims`. Task names are short ("commonsense").

    tasks: every task of the run; competent: those the model does (competence against the
    best trivial answer) — every claim uses these and only these; competence: per task,
    {read-out: `Competence`}; readout: per task, the read-out used; evals: `TaskEval` per competent task (arms named as
    `arms_for` names them: methods, "RANDOM-<s>", "common", "specific:<task>");
    budget_eval: the budget task's "<method>@<K>" arms; neurons: NeuronLLM's top-K (good,
    bad) flat ids per competent task; common, specific: the common (good, bad) and each
    task's specific (good, bad) ids over the competent tasks; shape: (n_layers, n_inner);
    timing: `metrics.repeated_ratio`'s (mean, lo, hi, ratios) of NL-36; ce: {(control, mode):
    [proxy] cross-entropy} of Fig. 10 on the budget task with `ce_units` (uids)."""

    model: str
    tasks: list
    competent: list
    readout: dict
    competence: dict
    evals: dict
    budget_task: str
    budgets: tuple
    budget_eval: TaskEval | None
    shape: tuple
    neurons: dict
    common: tuple
    specific: dict
    k: int
    timing: tuple | None = None
    ce: dict | None = None
    ce_units: list | None = None


PAPER_NEURONS = 352_256  # LLaMA 2-7B: 32 layers x 11,008 FFN neurons
COMPETITORS = ("TN", "QRNCA", "KN", "ACT", "RANDOM")
SWEPT = ("NeuronLLM", "TN-enabled", "QRNCA-enabled", "common")


def rac(base, edited, mode: str) -> float:
    """Signed relative change of Acc in % in the intended direction (RAC, negative on a
    Fail): 100 (acc - base) / base for "enhance", 100 (base - acc) / base for "degrade"
    (nan when base is 0)."""
    b = float(np.mean(base))
    if b == 0 or not np.isfinite(b):
        return np.nan
    change = (float(np.mean(edited)) - b) / b * 100
    return change if mode == "enhance" else -change


def _best_index(sweep: np.ndarray, mode: str) -> int:
    """Index of the best ratio of `sweep` ([ratio, example]): highest Acc for enhance, lowest
    for degrade, the first on ties (as `interventions.best_ratio` under Com == Acc)."""
    means = sweep.mean(1) * (1 if mode == "enhance" else -1)
    return int(np.flatnonzero(means == means.max())[0])


class _Pool:
    """The competent tasks' examples as one row axis, for `metrics.bootstrap_ci`: a statistic
    gets resampled row ids (and resampled RANDOM seed ids) and works task by task."""

    def __init__(self, evals: Mapping[str, TaskEval], n_seeds: int):
        self.evals, self.tasks = evals, list(evals)
        self.offsets = np.cumsum([0] + [e.n for e in evals.values()])
        self.n, self.n_seeds = int(self.offsets[-1]), max(n_seeds, 1)

    def rows_of(self, rows) -> dict:
        rows = np.asarray(rows, dtype=int)
        return {t: rows[(rows >= a) & (rows < b)] - a for t, a, b in zip(self.tasks, self.offsets, self.offsets[1:])}

    def ci(self, statistic, n_resamples: int, seed: int = 0) -> tuple[float, float, float]:
        from ..metrics import bootstrap_ci

        seeds = np.tile(np.arange(self.n_seeds)[:, None], (1, self.n))
        return bootstrap_ci(lambda r, s: statistic(self.rows_of(r), s[:, 0].astype(int)), np.arange(self.n), seeds,
                            n_resamples=n_resamples, seed=seed)


def effect(ev: TaskEval, name: str, mode: str, rows, seeds=None, control: str = "Both") -> float:
    """RAC (%, signed) of arm `name` on the examples `rows` of one task. "RANDOM": the mean
    over the seeds `seeds` of the arms "RANDOM-<s>". A swept arm: control "Good" (ratio 1.0),
    "Bad" (0.0) or "Both": the best ratio chosen on the other half of the examples (examples
    of even and odd index; the mean of the two held-out halves), so that picking the best of
    many ratios does not favour the swept methods; a one-ratio arm: its ratio."""
    rows = np.asarray(rows, dtype=int)
    if not len(rows):
        return np.nan
    base = ev.base[rows]
    if name == "RANDOM":
        n = len([k for k in ev.arms if k[0].startswith("RANDOM-") and k[1] == mode])
        seeds = np.arange(n) if seeds is None else seeds
        return rac(base, np.mean([ev.arms[f"RANDOM-{s}", mode][1][0, rows] for s in seeds], 0), mode)
    ratios, sweep = ev.arms[name, mode]
    if len(ratios) == 1:
        return rac(base, sweep[0, rows], mode)
    if control in ("Good", "Bad"):
        return rac(base, sweep[ratios.index(CONTROL_RATIO[control]), rows], mode)
    halves = [rows[rows % 2 == h] for h in (0, 1)]
    if not all(len(h) for h in halves):
        return np.nan
    out = []
    for pick, test in (halves, halves[::-1]):
        i = _best_index(sweep[:, pick], mode)
        out.append(rac(ev.base[test], sweep[i, test], mode))
    return float(np.mean(out))


def _avg(pool: _Pool, rows: dict, seeds, name: str, mode: str, control: str = "Both", tasks=None) -> float:
    vals = [effect(pool.evals[t], name, mode, rows[t], seeds, control) for t in (tasks or list(rows))]
    return float(np.mean(vals)) if vals else np.nan


def _collapse(evals: Mapping[str, TaskEval], names, modes=MODES) -> tuple[list, bool]:
    """(tasks where not every condition of `names` x `modes` collapsed, whether any did)."""
    keep, any_ = [], False
    for t, ev in evals.items():
        flags = [ev.collapse.get((n if n != "RANDOM" else "RANDOM-0", m), False) for n in names for m in modes]
        any_ |= any(flags)
        if not all(flags):
            keep.append(t)
    return keep, any_


def _layers(ids, shape) -> np.ndarray:
    return (np.asarray(torch.as_tensor(ids).tolist(), dtype=int) // shape[1]) if len(ids) else np.zeros(0, int)


def claims(result: Result, cfg, n_resamples: int = 1000, seed: int = 0) -> list[Claim]:
    """Every NL-* claim as a claims.json row (`claims.measured` / `claims.na`), each estimate
    with a 95 % bootstrap interval over evaluation questions (examples; RANDOM's seeds as a
    second level), over neurons for the layer claims, over repetitions for NL-36.

    Every claim uses `result.competent` only; a claim phrased on the paper's 4-task average
    is the average over the competent tasks and says so. Swept arms ("Both") take their best
    ratio on the other half of the examples (`effect`), so the choice among 11 ratios is not
    counted as an effect. RCC is not used where it equals RAC (text read-outs: the proxies
    of an example are read alike, Com == Acc). A task where every condition of a comparison
    collapsed (`TaskEval.collapse`) is not counted; any collapse flags the row.
    cfg: the scale's `NeuronLLM` (random_seeds)."""
    from ..metrics import bootstrap_ci, unit_mean_ci

    r, out = result, []
    names = list(r.competent)
    evals = {t: r.evals[t] for t in names if t in r.evals}
    n_seeds = max([sum(k[0].startswith("RANDOM-") and k[1] == "degrade" for k in ev.arms) for ev in evals.values()] or [1])
    pool = _Pool(evals, n_seeds)
    at_chance = [t for t in r.tasks if t not in names]
    where = (f"on the competent task(s) {names} (the paper averages its 4 tasks; "
             f"{', '.join(at_chance) or 'none'} fail the competence test against the best trivial answer)")
    text_readout = all(r.readout.get(t, "letter") != "letter" for t in names)
    rcc_note = "; RCC equals RAC under the text read-out (proxies read alike), not reported separately" if text_readout else \
        "; decided on RAC (RCC in the tables)"
    ci = lambda stat: pool.ci(stat, n_resamples, seed)
    est = lambda triple, p=pool: Estimate.of(triple, n=p.n, n_of="questions")
    none = lambda id: na(id, f"no task passes the competence test against the best trivial answer under any read-out ({r.tasks})")

    def comparison(id, stat, used, note, modes=MODES):
        keep, flag = _collapse(evals, used, modes)
        if not names:
            return none(id)
        if not keep:
            return na(id, f"every condition of the comparison collapses to one answer on {names}", flags=["collapse"])
        sub = _Pool({t: evals[t] for t in keep}, n_seeds)
        v = sub.ci(stat, n_resamples, seed)
        return measured(id, Estimate.of(v, n=sub.n, n_of="questions"), note=note + f"; measured {where}" + rcc_note,
                        flags=["collapse"] if flag else [])

    # ---- Table 1: NeuronLLM against every competitor (NL-01, 02, 07, 08, 09)
    for id, mode in (("NL-01", "degrade"), ("NL-02", "enhance")):
        stat = lambda rows, s, mode=mode: min(_avg(pool, rows, s, "NeuronLLM", mode) - _avg(pool, rows, s, c, mode)
                                             for c in COMPETITORS)
        parts = ", ".join(f"{c} {_avg(pool, pool.rows_of(np.arange(pool.n)), None, c, mode):.1f}" for c in COMPETITORS) if names else ""
        out.append(comparison(id, stat, ("NeuronLLM",) + COMPETITORS,
                              f"RAC %: NeuronLLM {_avg(pool, pool.rows_of(np.arange(pool.n)), None, 'NeuronLLM', mode):.1f}, {parts}"
                              if names else "", modes=(mode,)))
    for id in ("NL-03", "NL-04", "NL-05", "NL-06"):
        out.append(na(id, f"about Baichuan 2-7B / LLaMA 2-13B; this run is {r.model} (the same test on it: NL-01/NL-02)"))

    def pair(id, a, b, modes=MODES, extra=""):
        stat = lambda rows, s: min(_avg(pool, rows, s, a, m) - _avg(pool, rows, s, b, m) for m in modes)
        full = pool.rows_of(np.arange(pool.n))
        note = ", ".join(f"{OPS[m]} {_avg(pool, full, None, a, m) - _avg(pool, full, None, b, m):+.1f}" for m in modes) if names else ""
        return comparison(id, stat, (a, b), f"{a} minus {b}: {note}{extra}", modes)

    out.append(pair("NL-07", "NeuronLLM", "TN"))

    def wins(rows, s):
        cells = [effect(evals[t], "NeuronLLM", m, rows[t], s) >= max(effect(evals[t], c, m, rows[t], s) for c in COMPETITORS)
                 for t in rows for m in MODES]
        return float(np.mean(cells)) if cells else np.nan
    out.append(comparison("NL-08", wins, ("NeuronLLM",) + COMPETITORS, f"{2 * len(names)} (task, direction) cells"))

    def trivial_control(rows, s):
        return max(max(_avg(pool, rows, s, c, m), 0.0) for c in ("ACT", "RANDOM") for m in MODES)
    if names:
        full = pool.rows_of(np.arange(pool.n))
        signed = {(c, m): _avg(pool, full, None, c, m) for c in ("ACT", "RANDOM") for m in MODES}
        fails = [f"{c} {OPS[m]}" for (c, m), v in signed.items() if v < 0]
        nl = min(_avg(pool, full, None, "NeuronLLM", m) for m in MODES)
        note = (", ".join(f"{c} {OPS[m]} {v:+.1f}" for (c, m), v in signed.items()) + f" (signed RAC %); Fail: {fails or 'none'}; "
                f"NeuronLLM's smaller RAC {nl:.1f}")
    else:
        note = ""
    out.append(comparison("NL-09", trivial_control, ("ACT", "RANDOM"), note))

    share = 100 * 100 / PAPER_NEURONS
    n_neurons = r.shape[0] * r.shape[1]
    out.append(measured("NL-10", Estimate(share, n=1, n_of="arithmetic"),
                        note=f"100 / 352,256 = {share:.4f} %; 100 / 552,960 = {100 * 100 / 552960:.4f} %. Here K = {r.k} is "
                             f"{100 * r.k / n_neurons:.3f} % of {r.model}'s {n_neurons} neurons "
                             f"({r.k / n_neurons / (100 / PAPER_NEURONS):.1f}x the paper's share): K keeps the paper's count"))
    out.append(pair("NL-11", "TN-enabled", "TN"))
    out.append(pair("NL-12", "QRNCA-enabled", "QRNCA"))
    out.append(na("NL-13", f"needs two or more sizes of one model family; this run has one model ({r.model})"))
    out.append(pair("NL-14", "NeuronLLM", "TN-enabled"))
    out.append(pair("NL-15", "NeuronLLM", "QRNCA-enabled"))

    # ---- Tables 3/6: Good only, Bad only, Both (NL-16, 17, 18, 23, 25)
    for id, control in (("NL-16", "Good"), ("NL-17", "Bad")):
        stat = lambda rows, s, control=control: min(_avg(pool, rows, s, "NeuronLLM", m, control) - _avg(pool, rows, s, "RANDOM", m)
                                                   for m in MODES)
        note = ", ".join(f"{OPS[m]} {_avg(pool, pool.rows_of(np.arange(pool.n)), None, 'NeuronLLM', m, control):.1f} vs RANDOM "
                         f"{_avg(pool, pool.rows_of(np.arange(pool.n)), None, 'RANDOM', m):.1f}" for m in MODES) if names else ""
        out.append(comparison(id, stat, ("NeuronLLM", "RANDOM"), f"{control}-only RAC %: {note}"))

    def joint(rows, s):
        return min(_avg(pool, rows, s, "NeuronLLM", m) - max(_avg(pool, rows, s, "NeuronLLM", m, "Good"),
                                                             _avg(pool, rows, s, "NeuronLLM", m, "Bad")) for m in MODES)
    out.append(comparison("NL-18", joint, ("NeuronLLM",),
                          "Both's ratio is chosen on the other half of the examples, so Both >= Good, Bad is not built in"))
    out.append(na("NL-23", "holds by construction under the paper's selection: Both is the best of a ratio sweep that contains "
                           "100 % good (Good) and 0 % bad (Bad), ranked by Acc, and Com == Acc under the text read-out "
                           "(NL-18 tests Both against Good/Bad with the ratio chosen on held-out examples)",
                  flags=["by construction"]))
    out.append(pair("NL-24", "NeuronLLM", "TN-enabled", modes=("degrade",)))

    def never_fails(rows, s):
        return min(effect(evals[t], "NeuronLLM", m, rows[t], s) for t in rows for m in MODES)
    out.append(comparison("NL-25", never_fails, ("NeuronLLM",),
                          "#Fail(Both) <= #Fail(Good or Bad) holds by construction (a best-of-sweep Both fails only if every "
                          "ratio does), so only 'NeuronLLM Both never fails' is tested, with the ratio chosen on held-out examples"))

    # ---- common and task-specific neurons (NL-20, 21, 22, 30, 34, 35)
    multi = len(evals) >= 2
    two = (f"needs >= 2 tasks the model does (common and task-specific neurons are defined across tasks); "
           f"it does {len(names)}: {names}")
    if multi:
        def common_stat(rows, s):
            return min(effect(evals[t], "common", m, rows[t], s) - effect(evals[t], "RANDOM", m, rows[t], s)
                       for t in rows for m in MODES)
        out.append(comparison("NL-20", common_stat, ("common", "RANDOM"),
                              f"{len(r.common[0])} good + {len(r.common[1])} bad common neurons"))

        def diagonal(rows, s):
            vals = []
            for src in rows:
                own = effect(evals[src], f"specific:{src}", "degrade", rows[src], s)
                other = np.mean([effect(evals[t], f"specific:{src}", "degrade", rows[t], s) for t in rows if t != src])
                vals.append(own - other)
            return min(vals)
        out.append(comparison("NL-21", diagonal, [f"specific:{t}" for t in evals], "", ("degrade",)))

        def spill(rows, s):
            off = [(t, src) for t in rows for src in rows if t != src]
            enh = sum(effect(evals[t], f"specific:{src}", "enhance", rows[t], s) > 0 for t, src in off)
            deg = sum(effect(evals[t], f"specific:{src}", "degrade", rows[t], s) > 0 for t, src in off)
            return float(enh - deg)
        out.append(comparison("NL-22", spill, [f"specific:{t}" for t in evals], f"{len(evals) * (len(evals) - 1)} off-diagonal cells"))
    else:
        for id in ("NL-20", "NL-21", "NL-22"):
            out.append(na(id, two))
    pair8 = ("sentiment", "commonsense")
    if all(t in evals for t in pair8):
        def table8(rows, s):
            sign = lambda t, src: 1 if t == src else -1
            return min(sign(t, src) * effect(evals[t], f"specific:{src}", "enhance", rows[t], s) for t in pair8 for src in pair8)
        sub = _Pool({t: evals[t] for t in pair8}, n_seeds)
        v = sub.ci(lambda rows, s: table8(rows, s), n_resamples, seed)
        out.append(measured("NL-30", Estimate.of(v, n=sub.n, n_of="questions"), note="task-specific neurons, enhancer" + rcc_note))
    else:
        out.append(na("NL-30", f"needs sentiment and commonsense both done by the model; it does {names}"))

    # ---- where the neurons are (NL-31, 32, 34, 35)
    third = r.shape[0] // 3
    if names:
        good = np.concatenate([_layers(r.neurons[t][0], r.shape) for t in names])
        bad = np.concatenate([_layers(r.neurons[t][1], r.shape) for t in names])
        both = np.concatenate([good, bad])
        v = unit_mean_ci((both < third).astype(float), n_resamples=n_resamples, seed=seed)
        out.append(measured("NL-31", Estimate.of(v, n=len(both), n_of="neurons"),
                            note=f"top-{r.k} good and bad of {names}; bottom third = layers 0-{third - 1}"))
        m = min(len(good), len(bad))
        hist = lambda x: np.bincount(x.astype(int), minlength=r.shape[0])
        corr = lambda a, b: float(np.corrcoef(hist(a), hist(b))[0, 1]) if hist(a).std() > 0 and hist(b).std() > 0 else np.nan
        v = bootstrap_ci(corr, good[:m], bad[:m], n_resamples=n_resamples, seed=seed)
        out.append(measured("NL-32", Estimate.of(v, n=m, n_of="neuron pairs"),
                            note=f"per-layer counts of {m} good and {m} bad neurons (rows of equal rank resampled together)"))
    else:
        out.append(none("NL-31"))
        out.append(none("NL-32"))
    out.append(na("NL-33", f"a per-model contrast (Baichuan vs LLaMA); this run has one model ({r.model})"))
    common_ids = np.concatenate([_layers(r.common[0], r.shape), _layers(r.common[1], r.shape)]) if multi else np.zeros(0)
    if multi and len(common_ids):
        v = unit_mean_ci((common_ids < third).astype(float), n_resamples=n_resamples, seed=seed)
        out.append(measured("NL-34", Estimate.of(v, n=len(common_ids), n_of="neurons"), note=f"{len(common_ids)} common neurons"))
        spec = np.concatenate([_layers(r.specific[t][i], r.shape) for t in names for i in (0, 1)])
        layers_all = np.concatenate([common_ids, spec]).astype(float)
        is_common = np.r_[np.ones(len(common_ids)), np.zeros(len(spec))]
        diff = lambda x, c: x[c == 1].mean() - x[c == 0].mean() if (c == 1).any() and (c == 0).any() else np.nan
        v = bootstrap_ci(diff, layers_all, is_common, n_resamples=n_resamples, seed=seed)
        out.append(measured("NL-35", Estimate.of(v, n=len(layers_all), n_of="neurons"),
                            note=f"common over {names}: mean layer {common_ids.mean():.1f}, task-specific {spec.mean():.1f}"))
    else:
        reason = two if not multi else f"no neuron is in the top-{r.k} of two of {names}"
        out.append(na("NL-34", reason))
        out.append(na("NL-35", reason))

    # ---- timing (NL-36)
    if r.timing is not None:
        mean, lo, hi, reps = r.timing
        out.append(measured("NL-36", Estimate(mean, lo, hi, n=len(reps), n_of="repetitions"),
                            note="interleaved repetitions in one run (metrics.repeated_ratio); one layer, fast path"))
    else:
        out.append(na("NL-36", "no timing in this run"))

    # ---- budgets (NL-26..29) and Fig. 10 (NL-37) on the budget task
    bt, ks = r.budget_task, list(r.budgets)
    if bt in names and r.budget_eval is not None and len(ks) >= 2:
        bev = {bt: r.budget_eval}
        bpool = _Pool(bev, 1)
        e = lambda rows, name, m, k: effect(r.budget_eval, f"{name}@{k}", m, rows[bt])

        def every_k(rows, s):
            return min(e(rows, "NeuronLLM", m, k) - max(e(rows, "TN", m, k), e(rows, "QRNCA", m, k)) for m in MODES for k in ks)

        def factor(rows, s):
            target = e(rows, "NeuronLLM", "degrade", ks[0])
            reach = [k for k in ks if e(rows, "TN", "degrade", k) >= target]
            return (reach[0] if reach else 2 * ks[-1]) / ks[0]
        kb = 100 if 100 in ks else ks[len(ks) // 2]

        def returns(rows, s):
            d = {k: e(rows, "NeuronLLM", "degrade", k) for k in (ks[0], kb, ks[-1])}
            return (d[kb] - d[ks[0]]) - (d[ks[-1]] - d[kb])

        def unstable(rows, s):
            fails = lambda name: sum(e(rows, name, m, k) < 0 for m in MODES for k in ks)
            return (fails("TN") + fails("QRNCA")) / 2 - fails("NeuronLLM")
        used = [f"{n}@{k}" for n in BUDGET_METHODS for k in ks]
        keep, flag = _collapse(bev, used)
        bnote = f"{bt}, K in {ks}, {bpool.n} questions" + rcc_note
        for id, stat, extra in (("NL-26", every_k, ""), ("NL-27", factor, "; 2 x max K / 10 when TN never reaches it"),
                                ("NL-28", returns, f"; middle K = {kb}"), ("NL-29", unstable, "")):
            out.append(measured(id, Estimate.of(bpool.ci(stat, n_resamples, seed), n=bpool.n, n_of="questions"),
                                note=bnote + extra, flags=["collapse"] if flag else []))
    else:
        for id in ("NL-26", "NL-27", "NL-28", "NL-29"):
            out.append(na(id, f"the budget task {bt} is not done by the model ({where})") if names else none(id))
    if bt in names and r.ce:
        labels = [c for c in ("TN", "QRNCA", "Good", "Bad")]
        keys = [(c, m) for m in MODES for c in labels + ["Both"]]

        def ce_stat(*arrays):
            med = {k: float(np.median(a)) for k, a in zip(keys, arrays)}
            deg = med["Both", "degrade"] - max(med[c, "degrade"] for c in labels)
            enh = min(med[c, "enhance"] for c in labels) - med["Both", "enhance"]
            return min(deg, enh)
        v = bootstrap_ci(ce_stat, *[r.ce[k] for k in keys], units=r.ce_units, n_resamples=n_resamples, seed=seed)
        out.append(measured("NL-37", Estimate.of(v, n=len(set(r.ce_units)), n_of="questions"),
                            note=f"{bt}; Both at the in-sample best ratio (as Fig. 10); medians over the evaluation proxies"))
    else:
        out.append(none("NL-37") if not names else
                   na("NL-37", f"the budget task {bt} is not done by the model ({where})") if bt not in names else
                   na("NL-37", "no Fig. 10 read-out in this run"))

    # ---- competence (NL-19) and chunking (NL-38)
    best_of = {t: max(cs, key=lambda ro: cs[ro].acc - cs[ro].baseline) for t, cs in r.competence.items()}
    gaps = {t: r.competence[t][ro].acc - r.competence[t][ro].baseline for t, ro in best_of.items()}
    worst = min(gaps, key=gaps.get)
    c = r.competence[worst][best_of[worst]]
    out.append(measured("NL-19", Estimate(100 * gaps[worst], 100 * (c.ci[0] - c.baseline), 100 * (c.ci[1] - c.baseline),
                                          n=c.n, n_of="questions"),
                        note=f"weakest task: {worst}; per task its best read-out: " + ", ".join(
                            f"{t} ({ro}) acc {r.competence[t][ro].acc:.2f} vs trivial {r.competence[t][ro].baseline:.2f}"
                            for t, ro in best_of.items()) + "; interval: Clopper-Pearson of acc minus the trivial accuracy"))
    if "chunking" in evals:
        stat = lambda rows, s: max(_avg(pool, rows, s, "NeuronLLM", m, tasks=["chunking"]) for m in MODES)
        out.append(measured("NL-38", est(ci(stat)), note="our chunking set is CoNLL-2000-derived"))
    else:
        ch = r.competence.get("chunking")
        best_ch = max(ch.values(), key=lambda x: x.acc - x.baseline) if ch else None
        out.append(na("NL-38", "the model does not do our CoNLL-2000-derived chunking questions (competence test against the "
                               "best trivial answer" + (f": best acc {best_ch.acc:.2f} vs {best_ch.baseline:.2f})" if ch
                                                        else "; not run at this scale)")))
    order = {c.id: c for c in out}
    return [order[i] for i in sorted(order)]


def protocol(result: Result, rows: Sequence[Claim], cfg) -> dict:
    """What decided the NL claims, for `write_claims(protocol=...)`: the tasks, the competent
    ones and their read-outs, the evaluation questions per competent task, the localization
    settings, and the 95 % half-width of the main comparison (NL-01) against the paper's margin."""
    r, by = result, {c.id: c for c in rows}
    out = {"tasks": r.tasks, "competent (decide the claims)": r.competent,
           "read-out": {t: r.readout[t] for t in r.competent},
           "evaluation questions": {t: ev.n for t, ev in r.evals.items() if t in r.competent},
           "identification examples per task": cfg.n_train, "K": r.k, "budgets": r.budgets}
    main = by.get("NL-01")
    if main is not None and main.verdict != "n/a" and main.ci[0] is not None:
        out["NL-01 half-width"] = f"{sig((main.ci[1] - main.ci[0]) / 2)} pp (paper's margin {sig(main.rule['effect'])} pp)"
    return out


def conclusions(rows: Sequence[Claim], result: Result) -> str:
    """The notebook's conclusions as Markdown, every number from `rows` (the claims) and
    `result` (two significant digits, `sig`); NL-36 (wall times) is left out so that the
    text does not vary between runs."""
    r, by = result, {c.id: c for c in rows}
    lines = []
    left = [t for t in r.tasks if t not in r.competent]
    n = {t: ev.n for t, ev in r.evals.items() if t in r.competent}
    if r.competent:
        lines.append(f"**Tasks.** The model passes the competence test (against the best trivial answer) on "
                     f"{', '.join(f'{t} ({r.readout[t]})' for t in r.competent)}; "
                     f"{', '.join(left) or 'no task'} {'is' if len(left) == 1 else 'are'} left out of every claim. "
                     f"Evaluation examples: {', '.join(f'{t} {k}' for t, k in n.items())}"
                     + (f"; the budget sweep on {r.budget_eval.n}." if r.budget_eval is not None else "."))
    else:
        lines.append(f"**Tasks.** The model passes the competence test on none of {', '.join(r.tasks)}: every claim that "
                     "needs a task is n/a.")
    main = by.get("NL-01")
    if main is not None and main.verdict != "n/a" and main.ci[0] is not None:
        hw = (main.ci[1] - main.ci[0]) / 2
        lines.append(f"**Main comparison (NL-01).** NeuronLLM minus its strongest competitor in Deg RAC: {sig(main.estimate)} pp "
                     f"[{sig(main.ci[0])}, {sig(main.ci[1])}], half-width {sig(hw)} pp against the paper's margin "
                     f"{sig(main.rule['effect'])} pp (smallest effect of interest {sig(main.rule['sesoi'])} pp): "
                     f"{main.verdict}.")
    counts = {}
    for c in rows:
        if c.id != "NL-36":  # a wall-time ratio: its verdict may differ between runs, the text must not
            counts[c.verdict] = counts.get(c.verdict, 0) + 1
    lines.append("**Verdicts.** " + ", ".join(f"{v} {counts.get(v, 0)}" for v in ("replicated", "contradicted", "inconclusive", "n/a"))
                 + " (without NL-36, a wall-time claim, which is in claims.json).")
    for verdict in ("replicated", "contradicted", "inconclusive"):
        part = [c for c in rows if c.verdict == verdict and c.id != "NL-36"]
        if part:
            lines.append(f"- *{verdict.capitalize()}:* " + "; ".join(
                f"{c.id} {sig(c.estimate)}" + (f" [{sig(c.ci[0])}, {sig(c.ci[1])}]" if c.ci and c.ci[0] is not None else "")
                + f" {c.unit}" + (f" ({', '.join(c.flags)})" if c.flags else "") for c in part) + ".")
    na_rows = [c for c in rows if c.verdict == "n/a"]
    if na_rows:
        lines.append("- *n/a:* " + ", ".join(c.id + (" (by construction)" if "by construction" in c.flags else "") for c in na_rows)
                     + " — another model, fewer competent tasks than the claim needs, or a verdict built into the protocol.")
    for t in r.competent:
        ev = r.evals.get(t)
        if ev is None or ("NeuronLLM", "enhance") not in ev.arms:
            continue
        ratios, sweep = ev.arms["NeuronLLM", "enhance"]
        lower = int((sweep.mean(1) < ev.base.mean()).sum())
        lines.append(f"**Enhancer over the ratio sweep ({t}).** NeuronLLM's enhancer lowers Acc at {lower} of {len(ratios)} "
                     f"good:bad ratios (unedited Acc {sig(ev.base.mean())}, enhanced {sig(sweep.mean(1).min())} to "
                     f"{sig(sweep.mean(1).max())}).")
    return "\n\n".join(lines)


def intervention_rows(questions, base: OptionEval, arms: Sequence[Arm], results: Sequence[Sequence[OptionEval]],
                      n_resamples: int = 1000, seed: int = 0, **tags) -> list[dict]:
    """`interventions.arm_rows` plus, per (arm, ratio), the collapse share (share of examples
    given the modal answer text) and `collapse` (`metrics.collapsed` against the unedited
    answers). questions: in the order `sweep_arms` returns the read-outs."""
    from ..interventions import arm_rows
    from ..metrics import collapse_share, collapsed

    out = arm_rows(base, arms, results, n_resamples=n_resamples, seed=seed, **tags)
    base_answers = answer_texts(questions, base)
    shares = [(collapse_share(a), collapsed(a, base_answers)) for res in results for a in (answer_texts(questions, r) for r in res)]
    return [row | {"collapse_share": s, "collapse": c} for row, (s, c) in zip(out, shares)]
