"""Products of few rows through every linear of the embedded model, split over the threads
(`models.split_rows`) vs torch's plain linear, interleaved in one process at 2 threads.

MKL runs a product of a few rows on one core; its time is the weights' read at one core's
memory bandwidth. Split into one `bmm` block per thread, each core reads its share. Forward
and the input gradient are timed together (the backward reads the weights again).

Writes bench/results/rows.json: per row count, seconds of one pass over every linear (forward
and backward; median of the repetitions) split and plain, and their ratio (median, range).
"""
from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved, speedup, write  # noqa: E402


def main(row_counts=(1, 4, 8, 16, 32, 64), repetitions: int = 7, threads: int = 2) -> None:
    import torch

    import neuronloc as nl
    from neuronloc.models import SPLIT_ROWS, _linear_in_blocks

    torch.set_num_threads(threads)
    lm = nl.load_model("smollm2-135m")
    linears = [m for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]

    def run(fn, rows):
        g = torch.Generator().manual_seed(rows)
        inputs = [(torch.randn(rows, m.in_features, generator=g).requires_grad_(),
                   torch.randn(rows, m.out_features, generator=g)) for m in linears]  # a dense cotangent

        def go():
            for m, (x, cotangent) in zip(linears, inputs):
                torch.autograd.grad(fn(m, x), x, cotangent)
        return go

    def split(m, x):
        return _linear_in_blocks(m, x)

    def plain(m, x):
        return torch.nn.functional.linear(x, m.weight, m.bias)

    out = {"model": "smollm2-135m", "device": "cpu", "threads": threads, "split_rows": SPLIT_ROWS,
           "linears": len(linears), "weights_mib": round(sum(m.weight.numel() * 4 for m in linears) / 2**20),
           "repetitions": repetitions, "rows": {}}
    for rows in row_counts:
        fns = {"split": run(split, rows), "plain": run(plain, rows)}
        for fn in fns.values():
            fn()  # warm-up
        times = interleaved(fns, repetitions)
        out["rows"][rows] = {"split_seconds": round(statistics.median(times["split"]), 4),
                             "plain_seconds": round(statistics.median(times["plain"]), 4),
                             **speedup(times["plain"], times["split"])}
        print(rows, out["rows"][rows], flush=True)
    write("rows", out)


if __name__ == "__main__":
    main()
