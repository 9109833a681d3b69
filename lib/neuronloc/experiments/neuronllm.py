"""NeuronLLM (notebook 06): the arms, tables and claim rows behind good and bad neurons.

  arms_for        the arms of one task: Tables 1-3/6, 5 (common), Fig. 2/4 (task-specific), 7 (budgets)
  sig, cell       a number / a Table 1 cell as the paper prints it ("RAC/RCC" or "Fail")
  avg_effect      the mean signed RAC, RCC of a method over tasks (Table 1's Avg)
  table           Tables 1, 2, 3/6, 5: methods x (Deg|Enh, task) cells and Avg
  ablation        Tables 3 and 6: Good only, Bad only, Both rows of the swept arms
  bottom_share    Fig. 5-6: share of a neuron set in the bottom third of the layers
  answer_ce, control_result, ce_shifts
                  Fig. 10: cross-entropy of the correct option under each control
  claim_row       a claim row, or n/a where the model does too few of the tasks

Frames are `arm_rows` rows (one per arm and ratio: task, method, mode, ratio, acc, com,
rac, rcc, fail, effect_acc, effect_com, best, ...); `best` is those with best == True and
a `family` column (the method, RANDOM seeds merged). Tasks are named as in the "task"
column (the short name, "sentiment"); neuron sets are flat ids, best first (`neurons`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..claims import Claim, na
from ..interventions import Arm, OptionEval, best_ratio
from ..neurons import layer_counts
from ..report import rounded

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
        arms.append(Arm("common", mode, *common, budget, tuple(side_ratios)))
        for source, (good, bad) in specific.items():
            arms.append(Arm(f"specific:{source}", mode, good, bad, budget, tuple(side_ratios)))
        for k in budgets:
            for name in BUDGET_METHODS:
                good, bad = sets[name]
                arms.append(Arm(f"{name}@{k}", mode, good, bad, k, tuple(side_ratios) if len(bad) else (1.0,)))
    return arms


# ---------------------------------------------------------------- tables (Tables 1-3, 5-7)

def sig(value) -> str:
    """`value` at two significant digits as text ("nan" if not finite): nbval compares the
    committed outputs, and two digits do not flip under other CPUs (`report.rounded`)."""
    return "nan" if not np.isfinite(value) else f"{rounded(float(value)):g}"


def cell(row) -> str:
    """A Table 1 cell of one `arm_rows` row: "RAC/RCC" in %, or "Fail" when either moved the
    wrong way (as the paper prints it)."""
    return "Fail" if row["fail"] else f"{sig(row['rac'])}/{sig(row['rcc'])}"


def avg_effect(frame: pd.DataFrame, method: str, mode: str, tasks: Sequence[str]) -> tuple[float, float]:
    """(mean signed RAC, mean signed RCC) in % of the rows of `method` (the `family` column)
    and `mode` over `tasks`; a Fail counts negative, so methods compare. (nan, nan) if none."""
    part = frame[(frame["family"] == method) & (frame["mode"] == mode) & frame["task"].isin(list(tasks))]
    return (part["effect_acc"].mean(), part["effect_com"].mean()) if len(part) else (np.nan, np.nan)


def table(frame: pd.DataFrame, methods: Sequence[str], tasks: Sequence[str], averaged: Sequence[str]) -> pd.DataFrame:
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
                row[(op, t)] = cell(part.iloc[0]) if len(part) == 1 else \
                    f"{sig(part['effect_acc'].mean())}/{sig(part['effect_com'].mean())} (mean of {len(part)})"
            a, c = avg_effect(frame, method, mode, averaged)
            row[(op, "Avg")] = f"{sig(a)}/{sig(c)}"
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


# ---------------------------------------------------------------- claims

def claim_row(id: str, claim: str, paper: str, ours, unit: str, ok, note: str = "", figure=None, need: int = 1, *,
              competent: Sequence[str], no_task: str) -> Claim:
    """The claim row of a test that needs `need` tasks the model does (`competent`, their
    names): verdict "replicated" if `ok`, else "not replicated"; "n/a" with the reason (and
    `ours` where finite) when fewer tasks are done, "n/a" when `ours` is not a finite number.
    no_task: why none is done, for the note when `competent` is empty."""
    finite = ours is not None and np.isfinite(ours)
    if len(competent) < need:
        reason = (f"needs {need} task(s) the model does; {no_task}" if not competent else
                  f"needs {need} tasks the model does, it does {len(competent)} ({list(competent)})")
        return na(id, reason, float(ours) if finite else None, unit if finite else "")
    if not finite:
        return na(id, f"no number: {note or 'the comparison is undefined on this run'}")
    return Claim(id, claim, paper, float(ours), unit, "replicated" if ok else "not replicated", note, figure=figure)
