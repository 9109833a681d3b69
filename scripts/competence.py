"""Accuracy of a model on tasks under every read-out, with a binomial test against chance.

    python scripts/competence.py --model smollm2-135m --n 100 \
        neuronllm/ner neuronllm/chunking neuronllm/sentiment neuronllm/commonsense \
        mceval8k/agnews mceval8k/imdb mceval8k/myriadlama mceval8k/paws

Questions: the first n of the task's test split, each with the task's first
demonstration (one-shot, as QATT). Writes results/<slug>/competence.json and prints a
table. Measure a model's competence before reading a task-level claim off it.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from neuronloc import load_model
from neuronloc.interventions import competence, write_competence
from neuronloc.tasks import READOUTS
from neuronloc.tasks.loaders import load_task


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tasks", nargs="+")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    lm = load_model(args.model)
    competences = {}
    for name in args.tasks:
        task = load_task(name, split="test", n=args.n, seed=args.seed)
        demo = task.demonstrations[0] if task.demonstrations else None
        questions = [replace(q, demonstration=demo) if demo is not None else q for q in task.questions]
        for readout in READOUTS:
            c = competence(lm, questions, readout, progress=True)
            competences.setdefault(name, {})[readout] = c
            print(f"{name:24s} {c}", flush=True)
    path = Path(args.out) / lm.slug / "competence.json"
    write_competence(path, args.model, args.n, args.seed, competences)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
