"""Notebook 05: NEG §5-§6, skill-neuron probes on MCEval8K.

  split          one task's train / valid / test questions, train and valid free of test records
  shots          the questions as few-shot prompts (one demonstration per option, §5.4)
  probe_options  the constructor kwargs of every probe (neuron counts, seed)
  correct        per test question, right or wrong, of one probe over the tasks of a setting
  as_it1         a PAWS question in App. J's IT1 form (options listed, answer 'a' / 'b')
  task_table     the per-task accuracy table of one setting
  ordering       share of tasks where Tree >= Magn >= LM-Prob >= Rand (NG-18, NG-19)
  above_chance   per task, one-sided binomial test of a probe's accuracy against chance
  pooled_test    the same over all test questions of a setting pooled

The notebook keeps `features[task, setting]` = {"train", "valid", "test": `probes.ProbeData`}
(task "mceval8k/<name>", setting "zero-shot" or "few-shot") and `results`, a DataFrame with
one row per (task, setting, probe): columns "task" (the name without "mceval8k/"),
"setting", "probe", "acc" (test accuracy) and "chance".
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .. import probes
from ..tasks import few_shot
from ..tasks.core import MCQuestion
from ..tasks.loaders import load_task

Features = Mapping[tuple[str, str], Mapping[str, probes.ProbeData]]  # (task, setting) -> {split: features}

# NEG App. J: PAWS's second instruction ("IT1"), the options listed and answered by letter
IT1 = "Given two sentences, determine if they are paraphrases of each other."


def split(name: str, n_train: int, n_valid: int, n_test: int,
          seed: int = 0) -> tuple[dict[str, list[MCQuestion]], list[MCQuestion], int]:
    """Task `name`'s questions: test = the first `n_test` of test (seeded order); train and valid
    = the first `n_train` and the next `n_valid` of the train records that are not test records
    (`probes.dedup`: MCEval8K's train repeats test for 8 tasks, and its valid is test for 10).

    Returns ({"train", "valid", "test": questions}, the demonstration pool without test records,
    the number of train records dropped because they are test records)."""
    test = load_task(name, "test", n=n_test, seed=seed)
    pool = load_task(name, "train", seed=seed)  # every train record, seeded order
    every_test = load_task(name, "test", seed=seed).questions
    clean = probes.dedup(pool.questions, every_test)  # train records that are not test records
    train = clean[:n_train]
    valid = clean[n_train:n_train + n_valid]
    demos = probes.dedup(pool.demonstrations, every_test)  # a demonstration is never a test record
    return {"train": train, "valid": valid, "test": test.questions}, demos, len(pool) - len(clean)


def shots(questions: Sequence[MCQuestion], demos: Sequence[MCQuestion], seed: int = 0) -> list[MCQuestion]:
    """Each question with one demonstration per option from `demos` (`tasks.few_shot`, NEG §5.4)."""
    return [few_shot(q, demos, seed=seed) for q in questions]


def probe_options(sizes: Sequence[int], seed: int = 0) -> dict[str, dict]:
    """Constructor kwargs per probe name (`probes.PROBES`): the vote probes choose their neuron
    count from `sizes` on valid; Rand's draws and Tree-Probe's forest are seeded; LM-Prob takes none."""
    return {"rand": {"seed": seed}, "tree": {"seed": seed}, "magn": {"sizes": sizes}, "polar": {"sizes": sizes},
            "act": {"sizes": sizes}}


def correct(features: Features, probe: str, options: Mapping[str, dict], setting: str = "zero-shot") -> np.ndarray:
    """Probe `probe` (a `probes.PROBES` name, built with `options[probe]`) fitted on each task's
    train (neuron count on valid): 1.0 where it answers a test question right, else 0.0, over
    the test questions of every task of `setting` in the order of `features`, `[question]`."""
    out = []
    for (_, s), f in features.items():
        if s != setting:
            continue
        p = probes.PROBES[probe](**options.get(probe, {})).fit(f["train"], f["valid"])
        out.append((p.predict(f["test"]) == f["test"].answers).double())
    return torch.cat(out).numpy()


def as_it1(question: MCQuestion) -> MCQuestion:
    """A PAWS question (and its demonstrations) in App. J's IT1 form: the options
    "not paraphrase" / "paraphrase" listed and answered by the letters 'a' / 'b', the IT1
    instruction once, on the question (demonstrations carry none)."""
    def one(x: MCQuestion) -> MCQuestion:
        return replace(x, stem=x.stem.removesuffix("\nAnswer:"), options=("not paraphrase", "paraphrase"), labels=("a", "b"),
                       style="mc", readout="letter", instruction="" if x is not question else IT1,
                       demonstration=None if x.demonstration is None else one(x.demonstration))
    return one(question)


def task_table(table: pd.DataFrame, setting: str) -> pd.DataFrame | None:
    """The rows of `setting` of the accuracy table indexed by (setting, task), indexed by task
    (columns: probes); None when the setting was not run."""
    return table.loc[setting] if setting in table.index.get_level_values(0) else None


def ordering(table: pd.DataFrame) -> float:
    """Share of tasks (rows of `table`, columns "tree", "magn", "lm_prob", "rand": accuracies)
    where Tree >= Magn >= LM-Prob >= Rand (NEG §5.5's order of the probes)."""
    return float(((table["tree"] >= table["magn"]) & (table["magn"] >= table["lm_prob"])
                  & (table["lm_prob"] >= table["rand"])).mean())


def _rows(results: pd.DataFrame, features: Features, probe: str, setting: str | None) -> tuple[pd.DataFrame, list[int]]:
    """`probe`'s rows of `results` (of `setting`; None: every setting) and their test counts."""
    keep = results.probe == probe
    if setting is not None:
        keep &= results.setting == setting
    rows = results[keep]
    return rows, [len(features[f"mceval8k/{t}", s]["test"]) for t, s in zip(rows.task, rows.setting)]


def above_chance(results: pd.DataFrame, features: Features, probe: str, setting: str = "zero-shot",
                 alpha: float = 0.05) -> dict[str, bool]:
    """Per task of `setting`: is `probe`'s test accuracy above chance, one-sided binomial test
    (hits of n test questions against p = chance) with p-value < alpha?"""
    rows, n = _rows(results, features, probe, setting)
    return {r.task: stats.binomtest(int(round(r.acc * k)), k, r.chance, alternative="greater").pvalue < alpha
            for r, k in zip(rows.itertuples(), n)}


class PooledTest(NamedTuple):
    """A probe's hits over `total` test questions pooled over tasks, the pooled chance (the
    tasks' chance weighted by their question counts) and the one-sided binomial p-value."""
    hits: int
    total: int
    chance: float
    p: float


def pooled_test(results: pd.DataFrame, features: Features, probe: str, setting: str | None = "zero-shot") -> PooledTest:
    """One-sided binomial test of `probe` over all test questions of `setting` (None: of every
    setting) pooled, against the pooled chance."""
    rows, n = _rows(results, features, probe, setting)
    hits = int(round(sum(a * k for a, k in zip(rows.acc, n))))
    chance = float(np.average(rows.chance, weights=n))
    return PooledTest(hits, sum(n), chance, stats.binomtest(hits, sum(n), chance, alternative="greater").pvalue)
