"""NeurGrad all-layer scores for every option of a 4-option question vs one plain forward of
the same prompt (embedded model, CPU), interleaved in each of 3 fresh processes, at 1 and 2 threads.

Writes bench/results/neurgrad.json: per thread count, ratio_to_forward = median of neurgrad seconds /
forward seconds over 3 fresh processes x 15 interleaved repetitions (ratio_range: the smallest and largest
ratio; process_medians: each process's median), the seconds (the median over the processes of each one's
best), and NeurGrad's two parts: the prefix
forward into the KV cache (no LM head, no last FFN; compute-bound, about one forward; beside it
the same forward run to its end, `prefix_to_the_end_to_forward`, as it ran before that stop) and the answer
position's rows, one copy per option, forward and one backward (memory-bound: every weight and
the vocabulary head read twice, in products of 4 rows that `models.split_rows` splits over the
threads; at 1 thread MKL's own product runs). The ratio is therefore about
prefix / forward + rows / forward, not 1: it grows with the thread count, where the
compute-bound forward speeds up more than the rows' small operations.
"""
from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import run_phase, write  # noqa: E402

PROCESSES = 3  # fresh processes per thread count: one process's median moved 1.25-1.33 between runs at 2 threads
REPEAT = 15  # interleaved repetitions per process


def main() -> None:
    out = {"model": "smollm2-135m", "device": "cpu"}
    for threads in (1, 2):
        runs = [run_phase("neurgrad", repeat=REPEAT, threads=threads) for _ in range(PROCESSES)]
        ratios = sorted(x for r in runs for x in r["ratios"])
        best = {k: statistics.median(r[f"{k}_seconds"] for r in runs)
                for k in ("forward", "neurgrad", "prefix", "prefix_to_the_end", "rows")}
        out.update(prompt_tokens=runs[0]["tokens"], n_options=runs[0]["n_options"])
        out[f"threads_{threads}"] = {
            **{f"{k}_seconds": round(v, 4) for k, v in best.items()},
            "ratio_to_forward": round(statistics.median(ratios), 3),
            "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
            "process_medians": [round(r["median_ratio"], 3) for r in runs],
            "processes": PROCESSES, "repetitions": REPEAT,
            "prefix_to_forward": round(best["prefix"] / best["forward"], 3),
            "prefix_to_the_end_to_forward": round(best["prefix_to_the_end"] / best["forward"], 3),
            "rows_to_forward": round(best["rows"] / best["forward"], 3),
            "peak_rss_gib": round(max(r["peak_rss_gib"] for r in runs), 2)}
    write("neurgrad", out)


if __name__ == "__main__":
    main()
