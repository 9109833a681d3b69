"""CNL Eq. 7 (ig_positions) on the embedded model: every answer position in one batched
pass vs the per-position loop (one fast IG per answer token), on a GSM8K test question
with a ~100-token teacher-forced worked solution, S + 1 = 20 grid points, all layers, CPU.

Writes bench/results/ig_positions.json: speedup (loop seconds / batched seconds),
max_rel_err (max |batched - loop| / max |loop| over all neurons), peak RSS of each, the
machine's load average, and the row-positions both paths compute (the same: on a CPU, which
is compute bound, batching cannot remove work, only per-call overhead).
  python bench/bench_ig_positions.py                       # the committed result (~minutes)
  python bench/bench_ig_positions.py --n-answer 3 --layers 2 --name ig_positions_smoke
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import run_phase, write  # noqa: E402


def main(n_answer: int = 100, steps: int = 20, n_layers: int | None = None, name: str = "ig_positions") -> None:
    import numpy as np
    import torch

    layers = None if n_layers is None else list(range(n_layers))
    load_before = os.getloadavg()[0]  # other processes on the machine slow both paths (2 threads: badly)
    fast = run_phase("ig_positions", path="fast", steps=steps, n_answer=n_answer, layers=layers)
    loop = run_phase("ig_positions", path="loop", steps=steps, n_answer=n_answer, layers=layers)
    load_after = os.getloadavg()[0]
    a, b = np.nan_to_num(fast["scores"]), np.nan_to_num(loop["scores"])
    err = np.abs(a - b).max() / np.abs(b).max()
    write(name, {
        "model": "smollm2-135m", "device": "cpu", "threads": torch.get_num_threads(), "steps": steps,
        "layers": n_layers or 30, "target": "answer_prob", "example": fast["uid"],
        "prompt_tokens": fast["prompt_tokens"], "answer_tokens": fast["answer_tokens"],
        "batched_seconds": round(fast["seconds"], 3), "loop_seconds": round(loop["seconds"], 3),
        "speedup": round(loop["seconds"] / fast["seconds"], 2), "max_rel_err": float(err),
        "batched_peak_rss_gib": round(fast["peak_rss_gib"], 2), "loop_peak_rss_gib": round(loop["peak_rss_gib"], 2),
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        # both paths push the same (layer, alpha) rows x answer positions through the same layers and the
        # full-vocabulary head; batching saves per-call overhead and small-matrix inefficiency, not FLOPs
        "row_positions_each_path": (n_layers or 30) * steps * n_answer,
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-answer", type=int, default=100, help="teacher-forced answer tokens")
    parser.add_argument("--steps", type=int, default=20, help="IG grid points (CNL: S + 1 = 20)")
    parser.add_argument("--layers", type=int, default=None, help="first N layers only (default: all)")
    parser.add_argument("--name", default="ig_positions", help="bench/results/<name>.json")
    args = parser.parse_args()
    main(args.n_answer, args.steps, args.layers, args.name)
