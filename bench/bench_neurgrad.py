"""NeurGrad all-layer scores for every option of a 4-option question vs one plain
forward of the same prompt (embedded model, CPU), measured in the same process.

Writes bench/results/neurgrad.json: ratio_to_forward = neurgrad seconds / forward seconds.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import run_phase, write  # noqa: E402


def main() -> None:
    r = run_phase("neurgrad", repeat=5)
    write("neurgrad", {
        "model": "smollm2-135m", "device": "cpu", "prompt_tokens": r["tokens"], "n_options": r["n_options"],
        "forward_seconds": round(r["forward_seconds"], 4), "neurgrad_seconds": round(r["neurgrad_seconds"], 4),
        "ratio_to_forward": round(r["neurgrad_seconds"] / r["forward_seconds"], 3),
        "peak_rss_gib": round(r["peak_rss_gib"], 2),
    })


if __name__ == "__main__":
    main()
