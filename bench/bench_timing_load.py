"""NG-09's timing under machine load: does the IG / NeurGrad wall-time ratio hold when other
processes share the CPU?

A verdict on a timing ratio must not depend on what else the machine runs (issue 19: two runs
give the same verdicts). `experiments.linearity.timing_ratio` interleaves IG and NeurGrad, one
prompt per repetition; with rounds = 1 each repetition's ratio is one IG time over one NeurGrad
time, with rounds = 3 it is the smallest of three IG times over the smallest of three NeurGrad
times on that prompt (timeit's rule for one call). This bench measures both estimators idle and
with `busy` processes spinning on the CPU, in one process, one condition after the other.

Writes bench/results/timing_load.json: per estimator and load, the mean ratio, its 95 % interval
over repetitions and the seconds spent.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import write  # noqa: E402


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def main(repetitions: int = 10, busy: int = 2, ig_steps: int = 20) -> None:
    import torch

    import neuronloc as nl
    from neuronloc.experiments.linearity import factual_prompts, timing_ratio

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    lm = nl.load_model("smollm2-135m")
    prompts = factual_prompts(lm, ("pararel/P36", "pararel/P103", "pararel/P37"), n=repetitions, scan=60)
    kwargs = dict(a_kwargs=dict(target="answer_prob", steps=ig_steps, rule="linspace"))
    out = {"model": "smollm2-135m", "device": "cpu", "threads": torch.get_num_threads(), "prompts": len(prompts),
           "repetitions": repetitions, "ig_steps": ig_steps, "busy_processes": busy, "runs": []}
    ctx = mp.get_context("spawn")
    for load in ("idle", "loaded"):
        stop, workers = ctx.Event(), []
        if load == "loaded":
            workers = [ctx.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
            for w in workers:
                w.start()
            time.sleep(1.0)
        try:
            for rounds in (1, 3):
                start = time.perf_counter()
                mean, lo, hi, ratios = timing_ratio(lm, prompts, "ig", "neurgrad", repetitions, rounds=rounds, **kwargs)
                out["runs"].append({"load": load, "rounds": rounds, "mean": mean, "lo": lo, "hi": hi,
                                    "seconds": time.perf_counter() - start, "ratios": ratios})
                print(f"{load:6s} rounds {rounds}: {mean:.1f} [{lo:.1f}, {hi:.1f}]", flush=True)
        finally:
            stop.set()
            for w in workers:
                w.join()
    write("timing_load", out)


if __name__ == "__main__":
    main()
