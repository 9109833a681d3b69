"""NeurGrad all-layer scores for every option of a 4-option question vs one plain forward of
the same prompt (embedded model, CPU), interleaved in one process, at 1 and 2 threads.

Writes bench/results/neurgrad.json: per thread count, ratio_to_forward = median over the 7 interleaved
repetitions of neurgrad seconds / forward seconds (ratio_range: their smallest and largest), and NeurGrad's two parts: the prefix
forward into the KV cache (no LM head; compute-bound, about one forward) and the answer
position's rows, one copy per option, forward and one backward (memory-bound: every weight and
the vocabulary head read twice, in products of 4 rows that `models.split_rows` splits over the
threads; at 1 thread MKL's own product runs). The ratio is therefore about
prefix / forward + rows / forward, not 1: it grows with the thread count, where the
compute-bound forward speeds up more than the rows' small operations.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import run_phase, write  # noqa: E402


def main() -> None:
    out = {"model": "smollm2-135m", "device": "cpu"}
    for threads in (1, 2):
        r = run_phase("neurgrad", repeat=7, threads=threads)
        out.update(prompt_tokens=r["tokens"], n_options=r["n_options"])
        out[f"threads_{threads}"] = {
            "forward_seconds": round(r["forward_seconds"], 4), "neurgrad_seconds": round(r["neurgrad_seconds"], 4),
            "prefix_seconds": round(r["prefix_seconds"], 4), "rows_seconds": round(r["rows_seconds"], 4),
            "ratio_to_forward": round(r["median_ratio"], 3),
            "ratio_range": [round(x, 3) for x in r["ratio_range"]], "repetitions": r["repetitions"],
            "prefix_to_forward": round(r["prefix_seconds"] / r["forward_seconds"], 3),
            "rows_to_forward": round(r["rows_seconds"] / r["forward_seconds"], 3),
            "peak_rss_gib": round(r["peak_rss_gib"], 2)}
    write("neurgrad", out)


if __name__ == "__main__":
    main()
