"""Ground-truth NEG sweep (NEG §2.1: Δ in [-10, 10] step 0.2, sampled neurons) on a
factual cloze prompt: the batched fast path (prefix KV cache, only the answer position
re-run, rows = (neuron, Δ) pairs) vs full-prompt re-runs, measured in the same process.

    PYTHONPATH=lib python bench/bench_neg.py                 # embedded model -> bench/results/neg.json
    PYTHONPATH=lib python bench/bench_neg.py --model tiny --neurons 4 --out /tmp/neg.json   # plumbing check

Writes: sweep_speedup = full-prompt re-runs, one forward per (neuron, Δ) (the paper's
protocol) / batched fast path; batched_reference_speedup = full prompts batched like the
fast path / fast path; max_abs_err between the paths.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))


@dataclass
class Fact:
    prompt: str
    answer: str


FACT = Fact("Predict the [MASK] in each sentence in one word.Q: [MASK] is the capital of Japan.A:", " Tokyo")


def tiny_model():
    """The tests' tiny random LLaMA (plumbing check only)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from conftest import tiny_llama

    return tiny_llama()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a load_model name, or 'tiny' (random)")
    parser.add_argument("--neurons", type=int, default=10, help="sampled neurons (x 101 Δ values)")
    parser.add_argument("--rows", type=int, default=128, help="batch rows per forward of the batched paths")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "neg.json"))
    args = parser.parse_args()

    import neuronloc as nl
    from neuronloc.engine import make_query
    from neuronloc.neg import DELTAS, sweep

    torch.set_grad_enabled(False)
    lm = tiny_model() if args.model == "tiny" else nl.load_model(args.model)
    query = make_query(lm, FACT)
    site = lm.site()
    neurons = torch.randperm(site.n_neurons, generator=torch.Generator().manual_seed(0))[:args.neurons]

    def timed(**kwargs):
        sweep(lm, query, neurons[:1], DELTAS[:2], **kwargs)  # warm-up
        t = time.perf_counter()
        shifts = sweep(lm, query, neurons, DELTAS, **kwargs)
        return time.perf_counter() - t, shifts

    t_fast, fast = timed(rows=args.rows)
    t_batched, batched = timed(path="reference", rows=args.rows)
    t_naive, naive = timed(path="reference", rows=1)
    result = {
        "model": args.model, "device": str(lm.device), "prompt_tokens": len(query.prompt),
        "answer_tokens": len(query.answer_tokens), "neurons": args.neurons, "deltas": len(DELTAS),
        "conditions": args.neurons * len(DELTAS), "rows": args.rows, "threads": torch.get_num_threads(),
        "fast_seconds": round(t_fast, 4), "reference_batched_seconds": round(t_batched, 4),
        "reference_per_condition_seconds": round(t_naive, 4),
        "sweep_speedup": round(t_naive / t_fast, 2),
        "batched_reference_speedup": round(t_batched / t_fast, 2),
        "max_abs_err": float(max((fast - naive).abs().max(), (fast - batched).abs().max())),
        "max_abs_shift": float(fast.abs().max()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
