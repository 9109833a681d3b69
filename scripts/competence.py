"""Accuracy of a model on tasks under every read-out, with a binomial test against the best trivial answer.

    python scripts/competence.py --model smollm2-135m --n 100 \
        neuronllm/ner neuronllm/chunking neuronllm/sentiment neuronllm/commonsense \
        mceval8k/agnews mceval8k/imdb mceval8k/myriadlama mceval8k/paws

Questions: the first n of the task's test split, each with the task's first
demonstration (one-shot, as QATT). The baseline is the larger of chance and the best constant
answer (`interventions.trivial_accuracy`). Writes results/<slug>/competence.json and prints a
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


def table(path: Path) -> str:
    """The README's Markdown table of a competence.json: accuracy (p against the baseline) per
    read-out, the best read-out of a competent task in bold (the rule of `pick_readout`)."""
    import json

    from neuronloc.interventions import pick_readout, read_competence

    data = json.loads(Path(path).read_text())
    found = read_competence(path, seed=data["seed"], n=data["n"])
    lines = ["| task | chance | best constant answer | " + " | ".join(READOUTS) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(READOUTS)]
    for task, per in found.items():
        best = pick_readout(per)
        cells = [f"**{c.acc:.2f}**" if r == best else f"{c.acc:.2f}" for r, c in per.items()]
        cells = [f"{cell} (p={per[r].p_value:.2g})" for cell, r in zip(cells, per)]
        first = next(iter(per.values()))
        lines.append(f"| {task} | {first.chance:.2f} | {first.trivial:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tasks", nargs="*")
    p.add_argument("--table", type=Path, metavar="COMPETENCE_JSON",
                   help="print the Markdown table of a competence.json (README) and exit")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    if args.table:
        print(table(args.table))
        return
    if not args.tasks:
        p.error("name the tasks to measure (or --table COMPETENCE_JSON)")
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
