"""Shared bench setup: the embedded model, one ~120-token QATT question, and
phase timing in fresh subprocesses (so each phase's peak RSS is its own)."""
from __future__ import annotations

import json
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def question():
    """The ~120-token QATT question every benchmark uses."""
    from neuronloc.tasks.examples import example_question

    return example_question()


def _child(fn_name: str, kwargs: dict, queue):
    import torch
    import bench_phases

    torch.manual_seed(0)
    out = getattr(bench_phases, fn_name)(**kwargs)
    out = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}  # numpy pickles by value
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put(out)


def run_phase(fn_name: str, **kwargs) -> dict:
    """Run bench_phases.<fn_name>(**kwargs) in a fresh process; its dict + peak RSS."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn_name, kwargs, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def timed(fn, repeat: int = 1):
    """Best wall time of `repeat` calls (after one warm-up call) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def interleaved(fns: dict, repetitions: int) -> dict[str, list[float]]:
    """Wall seconds of each call of `fns` ({name: call}) over `repetitions` rounds, the calls of
    a round one after another, so load on the machine hits all of them alike."""
    runs = {name: [] for name in fns}
    for _ in range(repetitions):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t)
    return runs


def speedup(slow: list[float], fast: list[float]) -> dict:
    """The median and range of slow / fast, repetition by repetition, as the benches write them."""
    ratios = [s / f for s, f in zip(slow, fast)]
    return {"speedup_median": round(statistics.median(ratios), 2),
            "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)]}


def write(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    print(f"wrote {path}")
