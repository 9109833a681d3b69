"""IG fast path vs reference path on the embedded model (m = 16, all layers, one
~120-token QATT question, CPU), measured in the same run.

Writes bench/results/ig.json: speedup (reference seconds / fast seconds),
max_rel_err (max |fast - reference| / max |reference| over all neurons), peak RSS;
the same for the cloze read-out (each option's text scored, `cloze_*`), and the load
average while it ran (`load_1min`: ratios are fair only on an otherwise idle machine).

    python bench/bench_ig.py            # both read-outs
    python bench/bench_ig.py --cloze    # only the cloze_* keys (the letter ones are kept)
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import run_phase, write  # noqa: E402


def main(steps: int = 16, letter: bool = True) -> None:
    import json

    import numpy as np
    import torch

    from common import RESULTS

    load = [os.getloadavg()[0]]
    if letter:
        fast = run_phase("ig", path="fast", steps=steps, layers=None, repeat=2)
        ref = run_phase("ig", path="reference", steps=steps, layers=None)
        err = np.abs(fast["scores"] - ref["scores"]).max() / np.abs(ref["scores"]).max()
        load.append(os.getloadavg()[0])
    # the cloze read-out: each option's text scored token by token, one row per (layer, step, option)
    cloze_fast = run_phase("ig", path="fast", steps=steps, layers=None, repeat=1, readout="cloze", batch_size=None)
    cloze_ref = run_phase("ig", path="reference", steps=steps, layers=None, readout="cloze")
    cloze_err = np.abs(cloze_fast["scores"] - cloze_ref["scores"]).max() / np.abs(cloze_ref["scores"]).max()
    load.append(os.getloadavg()[0])
    out = {"model": "smollm2-135m", "device": "cpu", "threads": torch.get_num_threads(), "steps": steps, "layers": 30,
           "prompt_tokens": cloze_fast["tokens"], "target": "option_prob"}
    if letter:
        out.update({
            "fast_seconds": round(fast["seconds"], 3), "reference_seconds": round(ref["seconds"], 3),
            "speedup": round(ref["seconds"] / fast["seconds"], 1), "max_rel_err": float(err),
            "fast_peak_rss_gib": round(fast["peak_rss_gib"], 2), "reference_peak_rss_gib": round(ref["peak_rss_gib"], 2),
            "load_1min": [round(x, 2) for x in load[:2]]})
    else:
        before = json.loads((RESULTS / "ig.json").read_text())
        out.update({k: v for k, v in before.items() if not k.startswith("cloze_") and k not in out})
    out.update({
        "cloze_option_tokens": cloze_fast["option_tokens"],
        "cloze_fast_seconds": round(cloze_fast["seconds"], 3), "cloze_reference_seconds": round(cloze_ref["seconds"], 3),
        "cloze_speedup": round(cloze_ref["seconds"] / cloze_fast["seconds"], 1), "cloze_max_rel_err": float(cloze_err),
        "cloze_fast_peak_rss_gib": round(cloze_fast["peak_rss_gib"], 2),
        "cloze_reference_peak_rss_gib": round(cloze_ref["peak_rss_gib"], 2),
        "cloze_load_1min": [round(x, 2) for x in load[-2:]],
    })
    write("ig", out)


if __name__ == "__main__":
    main(letter="--cloze" not in sys.argv[1:])
