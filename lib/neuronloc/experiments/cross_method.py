"""Notebook 07: every localizer of the three papers on one model under one protocol (ours, no paper).

  method_seeds    the seeds a method is located with (RANDOM several, the others one)
  as_examples     multiple-choice questions as CNL's free-form (prompt, gold answer) examples
  run_locate      one method on one identification set, with its cost per question
  pairs           which sets of identification sets A and B a method's stability IoU compares
  conditions_for  the Deg / Enh (and Deg± / Enh±) edits of every located set of one task
  summary         per method and intervention: mean signed RAC over the competent tasks

A located set is the dict `run_locate` returns (and the notebook caches whole):
{"good", "bad": ranked flat ids `[k]` (bad empty for methods without a bad set),
"seconds", "forward", "backward": cost per question}. The notebook keeps them in
`located[task, method, part, seed]`, part "A" or "B".
"""
from __future__ import annotations

import time
from typing import Sequence

import pandas as pd

from ..hooks import Edit, count_passes, excite, silence
from ..interventions import degrader, enhancer
from ..localization import METHODS, locate
from ..models import LM
from ..neurons import to_layer_dict
from ..sites import Site
from ..tasks import render
from ..tasks.core import MCQuestion
from ..tasks.loaders import Example


def method_seeds(method: str, random_seeds: int) -> list[int]:
    """Seeds `method` is located with: 0..random_seeds-1 for RANDOM (each seed one draw), [0] for
    the others (they are deterministic given the questions)."""
    return list(range(random_seeds)) if method == "random" else [0]


def as_examples(questions: Sequence[MCQuestion], tokenizer) -> list[Example]:
    """CNL takes (prompt, answer): each question as the prompt of its read-out and its gold
    continuation (the answer's label under the letter read-out, else the answer's option text)."""
    return [Example(render(q, tokenizer, readout=q.readout), q.answer_label if q.readout == "letter" else q.answer_text,
                    q.uid) for q in questions]


def run_locate(lm: LM, method: str, questions: Sequence[MCQuestion], k: int, steps: int | None,
               seed: int = 0) -> dict:
    """Locate `method`'s top-k neurons on `questions` (`localization.locate`; CNL on `as_examples`).

    Returns {"good", "bad": ranked flat ids `[<= k]`, "seconds": wall seconds, "forward",
    "backward": the model's passes (`hooks.count_passes`, a batched pass counts once)}, each cost
    per question; RANDOM reads no question, so its cost is that of its one draw.
    """
    spec = METHODS[method]
    data = as_examples(questions, lm.tokenizer) if spec.free_form else questions
    start = time.perf_counter()
    with count_passes(lm.model) as passes:
        found = locate(lm, data, method, k=k, seed=seed, steps=steps, progress=False)
    seconds = time.perf_counter() - start
    n = len(questions) if spec.per_question else 1
    return {"good": found.good[:k], "bad": found.bad[:k], "seconds": seconds / n,
            "forward": passes.forward / n, "backward": passes.backward / n}


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


def summary(changes: pd.DataFrame) -> pd.DataFrame:
    """Per method and intervention, on the competent tasks only.

    changes: one row per (task, method, seed, op) with columns task, competent, method, op and
    rac, low, high (signed RAC in % and its bootstrap interval, `metrics.change_ci`).
    Returns one row per (method, op), in order of first appearance: "rac", the mean over tasks
    of the per-task RAC (RANDOM: the mean over its seeds per task), and "CI excl. 0, right way",
    "hits/n": how many of n intervals lie below 0 for a Deg op (above 0 for Enh) - for a method,
    its per-task intervals (n tasks; bounds averaged over seeds); for RANDOM, every (task, seed)
    interval (n tasks x seeds).
    """
    out = []
    competent = changes[changes.competent]
    for (method, op), group in competent.groupby(["method", "op"], sort=False):
        lower = op.startswith("Deg")  # Deg should lower accuracy, Enh raise it
        by_task = group.groupby("task").agg(rac=("rac", "mean"), low=("low", "mean"), high=("high", "mean"))
        counted = group if method == "random" else by_task  # RANDOM: every seed's interval counts
        hits = int(((counted.high < 0) if lower else (counted.low > 0)).sum())
        out.append(dict(method=method, op=op, rac=by_task.rac.mean(),
                        **{"CI excl. 0, right way": f"{hits}/{len(counted)}"}))
    return pd.DataFrame(out)
