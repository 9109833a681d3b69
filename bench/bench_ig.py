"""IG fast path vs reference path on the embedded model (m = 16, all layers, one
~120-token QATT question, CPU), measured in the same run.

Writes bench/results/ig.json: speedup (reference seconds / fast seconds),
max_rel_err (max |fast - reference| / max |reference| over all neurons), peak RSS;
the same for the cloze read-out (each option's text scored, `cloze_*`).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import run_phase, write  # noqa: E402


def main(steps: int = 16) -> None:
    import numpy as np
    import torch

    fast = run_phase("ig", path="fast", steps=steps, layers=None, repeat=2)
    ref = run_phase("ig", path="reference", steps=steps, layers=None)
    err = np.abs(fast["scores"] - ref["scores"]).max() / np.abs(ref["scores"]).max()
    # the cloze read-out: each option's text scored token by token, one row per (layer, step, option)
    cloze_fast = run_phase("ig", path="fast", steps=steps, layers=None, repeat=1, readout="cloze", batch_size=None)
    cloze_ref = run_phase("ig", path="reference", steps=steps, layers=None, readout="cloze")
    cloze_err = np.abs(cloze_fast["scores"] - cloze_ref["scores"]).max() / np.abs(cloze_ref["scores"]).max()
    write("ig", {
        "model": "smollm2-135m", "device": "cpu", "threads": torch.get_num_threads(), "steps": steps, "layers": 30,
        "prompt_tokens": fast["tokens"], "target": "option_prob",
        "fast_seconds": round(fast["seconds"], 3), "reference_seconds": round(ref["seconds"], 3),
        "speedup": round(ref["seconds"] / fast["seconds"], 1), "max_rel_err": float(err),
        "fast_peak_rss_gib": round(fast["peak_rss_gib"], 2), "reference_peak_rss_gib": round(ref["peak_rss_gib"], 2),
        "cloze_option_tokens": cloze_fast["option_tokens"],
        "cloze_fast_seconds": round(cloze_fast["seconds"], 3), "cloze_reference_seconds": round(cloze_ref["seconds"], 3),
        "cloze_speedup": round(cloze_ref["seconds"] / cloze_fast["seconds"], 1), "cloze_max_rel_err": float(cloze_err),
        "cloze_fast_peak_rss_gib": round(cloze_fast["peak_rss_gib"], 2),
        "cloze_reference_peak_rss_gib": round(cloze_ref["peak_rss_gib"], 2),
    })


if __name__ == "__main__":
    main()
