"""Evaluation throughput: answering multiple-choice questions (the cloze read-out of the
competent tasks) under several conditions, against its floor, measured in one process.

The verdict issues multiply evaluation: hundreds of questions per task x every condition
(methods x directions x ratios x budgets). `evaluate_conditions` runs each question's prompt
once into a KV cache and then one batch of rows per condition (each row: the answer position
and the option tokens). Its floor is one plain forward of the prompt plus the option tokens
per question and condition, without the shared prefix; the ratio to that floor says what the
engine saves (below 1) or costs.

Writes bench/results/evaluate.json: questions per second for 1 and 8 conditions, the floor's
seconds for the same work, and their ratio (interleaved repetitions, median), at 1 thread.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import write  # noqa: E402


def main(n_questions: int = 16, repetitions: int = 3) -> None:
    import torch

    import neuronloc as nl
    from neuronloc.engine import make_query
    from neuronloc.hooks import Edit
    from neuronloc.interventions import evaluate_conditions
    from neuronloc.tasks.loaders import load_task

    torch.set_num_threads(1)
    lm = nl.load_model("smollm2-135m")
    questions = load_task("neuronllm/commonsense", n=n_questions, seed=0).questions
    site = lm.site("ffn.mid")
    gen = torch.Generator().manual_seed(0)
    conditions = [[]] + [[Edit(int(l), torch.randint(site.n_inner, (20,), generator=gen), "set", 0.0)]
                         for l in torch.randint(site.n_layers, (7,), generator=gen)]
    sequences = []  # the floor: prompt + every option's tokens, one plain forward each
    for q in questions:
        query = make_query(lm, q, readout="cloze")
        sequences.append(torch.cat([query.prompt] + [torch.as_tensor(c) for c in query.continuations])[None])

    def engine(k):
        return lambda: evaluate_conditions(lm, questions, conditions[:k], site, readout="cloze")

    def floor(k):
        def run():
            with torch.no_grad():
                for _ in range(k):
                    for ids in sequences:
                        lm.model(input_ids=ids)
        return run

    out = {"model": "smollm2-135m", "device": "cpu", "threads": 1, "task": "neuronllm/commonsense", "readout": "cloze",
           "questions": n_questions}
    for k in (1, 8):
        engine(k)(), floor(k)()  # warm-up
        runs = {"engine": [], "floor": []}
        for _ in range(repetitions):
            for name, fn in (("engine", engine(k)), ("floor", floor(k))):
                t = time.perf_counter()
                fn()
                runs[name].append(time.perf_counter() - t)
        ratios = sorted(e / f for e, f in zip(runs["engine"], runs["floor"]))
        out[f"conditions_{k}"] = {"engine_seconds": round(min(runs["engine"]), 3), "floor_seconds": round(min(runs["floor"]), 3),
                                  "questions_per_second": round(n_questions * k / min(runs["engine"]), 2),
                                  "ratio_to_floor": round(ratios[len(ratios) // 2], 3)}
    write("evaluate", out)


if __name__ == "__main__":
    main()
