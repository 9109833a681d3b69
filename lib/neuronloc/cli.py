"""Command line: `neuronloc attribute`, `neuronloc methods`, `neuronloc tasks`.

    neuronloc attribute --model smollm2-135m --task neuronllm/sentiment --method ace --n 5

writes results/<model-slug>/cli/<task>/<method>/<parameters>/{scores.pt, good.json, bad.json, meta.json},
<parameters> naming them all (e.g. train-n5-p3-k100-zauto-stepsauto-sigma6-var-ffn.mid-seed0), so runs
with other parameters never overwrite each other; meta.json records every parameter. Everything cheap
(values, device, model path, writable --out, task kind) is checked before the model is loaded. Errors are one
line on stderr and exit status 2; Ctrl-C is one line and exit status 130 (a re-run resumes from the cache).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .configs import ACE, CNL, SPREADS
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
    a.add_argument("--k", type=int, default=ACE.k, help=f"size of the good and bad sets (NeuronLLM: K = {ACE.k})")
    a.add_argument("--z", type=int, default=None,
                   help="per-example set size for additive reordering (default: the paper's 5000 scaled to the model)")
    a.add_argument("--steps", type=int, default=None,
                   help=f"IG steps (default: the method's, {ACE.steps}; CNL: {CNL.steps} points = S + 1)")
    a.add_argument("--sigma", type=float, default=CNL.sigma, help=f"CNL sigma-mask threshold (CNL: {CNL.sigma:g})")
    a.add_argument("--spread", default=CNL.spread, choices=list(SPREADS), help="CNL spread: variance (as written) or std")
    a.add_argument("--site", default="ffn.mid", choices=["ffn.mid", "ffn.up"], help="neuron site")
    a.add_argument("--seed", type=int, default=0, help="seed for data sampling, QATT shuffles and RANDOM")
    a.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    a.add_argument("--out", default="results", help="results root (output goes to <out>/<model-slug>/cli/...)")
    a.add_argument("--no-cache", action="store_true", help="do not read or write the per-question score cache")
    sub.add_parser("methods", help="list localization methods")
    sub.add_parser("tasks", help="list task names")
    return p


def _run(args) -> dict:
    """Every parameter that decides a run's results (recorded in meta.json)."""
    return {k: getattr(args, k) for k in ("model", "task", "method", "split", "n", "proxies", "k", "z", "steps",
                                          "sigma", "spread", "site", "seed")}


def _out_dir(args) -> Path:
    """<out>/<model-slug>/cli/<task>/<method>/<parameters>: runs with other parameters go to other folders."""
    from .models import slug

    auto = lambda v: "auto" if v is None else v
    name = (f"{args.split}-n{args.n}-p{args.proxies}-k{args.k}-z{auto(args.z)}-steps{auto(args.steps)}"
            f"-sigma{args.sigma:g}-{args.spread}-{args.site}-seed{args.seed}")
    return Path(args.out) / slug(args.model) / "cli" / args.task.replace("/", "--") / args.method / name


def _check_writable(folder: Path, out: str) -> None:
    """The output folder can be made and written (probed in its nearest existing ancestor, which is left as it was)."""
    import tempfile

    ancestor = next(p for p in [folder, *folder.parents] if p.exists())
    if not ancestor.is_dir():
        raise ValueError(f"--out {out}: {ancestor} is a file, not a folder; pass a writable folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise ValueError(f"--out {out} is not writable ({err.strerror} in {ancestor}); pass a writable folder") from None


def _check(args) -> Path:
    """Everything cheap, before the data and the model are loaded; returns the output folder."""
    import math

    from .models import check_device, check_model_name
    from .parallel import Shard
    from .tasks.loaders import EXAMPLE_LOADERS, LOADERS, load_examples, load_task

    for name in ("n", "proxies", "k", "z", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}")
    if not (math.isfinite(args.sigma) and args.sigma > 0):
        raise ValueError(f"--sigma must be a positive number, got {args.sigma}")
    shard = Shard.current()  # RANK / WORLD_SIZE of a multi-process launch, checked here
    if args.no_cache and shard.world > 1:
        raise ValueError(f"--no-cache cannot be used with {shard.world} processes: they merge their scores through the cache")
    free_form = METHODS[args.method].free_form
    if args.task not in LOADERS and args.task not in EXAMPLE_LOADERS:  # raises "unknown task ...; did you mean ..."
        (load_examples if free_form else load_task)(args.task)
    if free_form and args.task in LOADERS:
        raise ValueError(f"--method {args.method} needs free-form data (e.g. gsm8k, emotion, lre/<relation>; see `neuronloc tasks`), "
                         f"and {args.task} is a multiple-choice task")
    if not free_form and args.task in EXAMPLE_LOADERS:
        raise ValueError(f"{args.task} is free-form data, which only --method cnl takes; --method {args.method} "
                         f"needs a multiple-choice task (see `neuronloc tasks`)")
    check_device(args.device)
    check_model_name(args.model)
    out = _out_dir(args)
    _check_writable(out, args.out)
    meta = out / "meta.json"
    if meta.exists():
        try:
            before = json.loads(meta.read_text()).get("run", {})
        except ValueError:
            before = {}
        if before != _run(args):
            differ = sorted(k for k in _run(args) if before.get(k) != getattr(args, k)) or ["unknown"]
            raise ValueError(f"{out} holds another run's results (it differs in: {', '.join(differ)}); "
                             f"pass another --out or move that folder away")
    return out


def _attribute(args) -> None:
    import torch

    import neuronloc
    from .localization import locate
    from .models import load_model
    from .neurons import unflat
    from .parallel import Shard
    from .store import Store, write_atomic
    from .tasks import qatt
    from .tasks.loaders import load_examples, load_task

    out = _check(args)
    if METHODS[args.method].free_form:  # data first: a missing file fails before the slow model load
        questions = load_examples(args.task, split=args.split, n=args.n, seed=args.seed)
    else:
        task = load_task(args.task, split=args.split, n=args.n, seed=args.seed)
        questions = qatt(task, n_proxies=args.proxies, seed=args.seed).questions if args.proxies > 1 else task.questions
    lm = load_model(args.model, device=args.device)
    store = None if args.no_cache else Store.for_model(args.out, lm.slug)
    res = locate(lm, questions, args.method, k=args.k, z=args.z, steps=args.steps, store=store, seed=args.seed,
                 sigma=args.sigma, spread=args.spread, site=args.site)
    n_inner = res.scores.shape[1]

    def rows(ids):
        return [dict(zip(("layer", "neuron"), unflat(i, n_inner)), score=float(res.scores.flatten()[i])) for i in ids]

    if not Shard.current().main:  # several processes (parallel): every one has the scores, rank 0 writes
        return
    write_atomic(out / "scores.pt", lambda f: torch.save({"scores": res.scores, "example_scores": res.example_scores}, f))
    write_atomic(out / "good.json", json.dumps(rows(res.good), indent=1))
    write_atomic(out / "bad.json", json.dumps(rows(res.bad), indent=1))
    meta = {"run": _run(args), "questions": len(questions), "params": res.params, "neuronloc": neuronloc.__version__}
    write_atomic(out / "meta.json", json.dumps(meta, indent=1, default=str))  # last: a folder with meta.json is complete
    print(f"{args.method} on {args.task}: {len(res.good)} good, {len(res.bad)} bad neurons -> {out}")


def _interrupted(args) -> str:
    from .models import slug

    if getattr(args, "command", "") != "attribute":
        return "neuronloc: interrupted"
    if args.no_cache:
        return "neuronloc: interrupted; nothing was cached (--no-cache), so a re-run starts over"
    cache = Path(args.out) / slug(args.model) / "cache"
    return f"neuronloc: interrupted; re-run the same command to resume from the scores cached in {cache}"


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
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
