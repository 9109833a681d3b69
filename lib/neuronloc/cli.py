"""Command line: `neuronloc attribute`, `neuronloc methods`, `neuronloc tasks`.

    neuronloc attribute --model smollm2-135m --task neuronllm/sentiment --method ace --n 5

writes results/<model-slug>/cli/<task>/<method>/{scores.pt, good.json, bad.json, meta.json}.
Errors are one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .localization import METHODS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuronloc", description="Locate task, skill and capability neurons in language models.")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attribute", help="score a task's neurons and write the good/bad sets",
                       description="Score every question of a task with one method, aggregate to task level, "
                                   "and write the scores and the good/bad neuron sets.")
    a.add_argument("--model", default="smollm2-135m",
                   help="Hugging Face id, local directory, .gguf file, or 'smollm2-135m' (embedded default)")
    a.add_argument("--task", required=True,
                   help="task name (see `neuronloc tasks`), e.g. neuronllm/sentiment, mceval8k/agnews, gsm8k")
    a.add_argument("--method", default="ace", choices=sorted(METHODS),
                   help="localization method (see `neuronloc methods`); cnl takes free-form tasks")
    a.add_argument("--split", default="train", help="data split to locate on (default: train)")
    a.add_argument("--n", type=int, default=5, help="number of source examples (NeuronLLM: tr = 5)")
    a.add_argument("--proxies", type=int, default=3, help="QATT proxies per example (NeuronLLM: 3; 1 = no QATT)")
    a.add_argument("--k", type=int, default=100, help="size of the good and bad sets (NeuronLLM: K = 100)")
    a.add_argument("--z", type=int, default=None,
                   help="per-example set size for additive reordering (default: the paper's 5000 scaled to the model)")
    a.add_argument("--steps", type=int, default=None, help="IG steps (default 16; CNL: 20 points = S + 1)")
    a.add_argument("--sigma", type=float, default=6.0, help="CNL sigma-mask threshold (CNL: 6)")
    a.add_argument("--spread", default="var", choices=["var", "std"], help="CNL spread: variance (as written) or std")
    a.add_argument("--site", default="ffn.mid", choices=["ffn.mid", "ffn.up"], help="neuron site")
    a.add_argument("--seed", type=int, default=0, help="seed for data sampling, QATT shuffles and RANDOM")
    a.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a.add_argument("--out", default="results", help="results root (output goes to <out>/<model-slug>/cli/...)")
    a.add_argument("--no-cache", action="store_true", help="do not read or write the per-question score cache")
    sub.add_parser("methods", help="list localization methods")
    sub.add_parser("tasks", help="list task names")
    return p


def _attribute(args) -> None:
    import torch

    from .localization import locate
    from .models import load_model
    from .neurons import unflat
    from .store import Store
    from .tasks import qatt
    from .tasks.loaders import load_examples, load_task

    if args.method == "cnl":  # data first: a missing file fails before the slow model load
        questions = load_examples(args.task, split=args.split, n=args.n, seed=args.seed)
    else:
        task = load_task(args.task, split=args.split, n=args.n, seed=args.seed)
        questions = qatt(task, n_proxies=args.proxies, seed=args.seed).questions if args.proxies > 1 else task.questions
    lm = load_model(args.model, device=args.device)
    store = None if args.no_cache else Store.for_model(args.out, lm.slug)
    res = locate(lm, questions, args.method, k=args.k, z=args.z, steps=args.steps, store=store, seed=args.seed,
                 sigma=args.sigma, spread=args.spread, site=args.site)
    out = Path(args.out) / lm.slug / "cli" / args.task.replace("/", "--") / args.method
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"scores": res.scores, "example_scores": res.example_scores}, out / "scores.pt")
    n_inner = res.scores.shape[1]

    def rows(ids):
        return [dict(zip(("layer", "neuron"), unflat(i, n_inner)), score=float(res.scores.flatten()[i])) for i in ids]

    (out / "good.json").write_text(json.dumps(rows(res.good), indent=1))
    (out / "bad.json").write_text(json.dumps(rows(res.bad), indent=1))
    (out / "meta.json").write_text(json.dumps({"model": args.model, "task": args.task, "method": args.method,
                                               "split": args.split, "n": args.n, "questions": len(questions),
                                               "params": res.params}, indent=1, default=str))
    print(f"{args.method} on {args.task}: {len(res.good)} good, {len(res.bad)} bad neurons -> {out}")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "methods":
            from .localization.methods import __doc__ as doc
            print(doc.split("\n\n")[1])
        elif args.command == "tasks":
            from .tasks.loaders import EXAMPLE_LOADERS, LOADERS
            print("multiple choice:", ", ".join(sorted(LOADERS)))
            print("free-form (cnl):", ", ".join(sorted(EXAMPLE_LOADERS)))
        else:
            _attribute(args)
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        print(f"neuronloc: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
