"""IG fast path vs reference path on the embedded model (m = 16, all layers, one
~120-token QATT question, CPU), measured in the same run.

Writes bench/results/ig.json: speedup (reference seconds / fast seconds), both paths
timed the same way (each in a fresh process: one warm-up call on one layer and one step,
then one timed call), max_rel_err (max |fast - reference| / max |reference| over all
neurons), peak RSS; the same for the cloze read-out (each option's text scored,
`cloze_*`); the load average while it ran (`load_1min`: ratios are fair only on an
otherwise idle machine); and with --errors, `errors`: per target, the max relative error
of the fast and the reference path against a float64 run of the same model (layers
ERROR_LAYERS, m = 16: float64 on every layer would take long on a CPU).

    python bench/bench_ig.py            # both read-outs
    python bench/bench_ig.py --cloze    # only the cloze_* keys (the others are kept)
    python bench/bench_ig.py --errors   # only the errors key (the others are kept)
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import run_phase, write  # noqa: E402

ERROR_LAYERS = [0, 14, 29]
TARGETS = ["option_prob", "answer_prob", "answer_logprob", "prob_margin"]


def main(steps: int = 16, letter: bool = True, cloze: bool = True, errors: bool = False) -> None:
    import json

    import numpy as np
    import torch

    from common import RESULTS

    out = {"model": "smollm2-135m", "device": "cpu", "threads": torch.get_num_threads(), "steps": steps, "layers": 30,
           "target": "option_prob", "timing": "each path in a fresh process: one warm-up call (1 layer, 1 step), "
                                             "then one timed call"}
    path = RESULTS / "ig.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    load = [os.getloadavg()[0]]
    if letter:
        fast = run_phase("ig", path="fast", steps=steps, layers=None)
        ref = run_phase("ig", path="reference", steps=steps, layers=None)
        err = np.abs(fast["scores"] - ref["scores"]).max() / np.abs(ref["scores"]).max()
        load.append(os.getloadavg()[0])
        out.update({
            "prompt_tokens": fast["tokens"],
            "fast_seconds": round(fast["seconds"], 3), "reference_seconds": round(ref["seconds"], 3),
            "speedup": round(ref["seconds"] / fast["seconds"], 1), "max_rel_err": float(err),
            "fast_peak_rss_gib": round(fast["peak_rss_gib"], 2), "reference_peak_rss_gib": round(ref["peak_rss_gib"], 2),
            "load_1min": [round(x, 2) for x in load[-2:]]})
    else:
        out.update({k: v for k, v in before.items() if not k.startswith("cloze_") and k not in out and k != "errors"})
    if cloze:
        # the cloze read-out: each option's text scored token by token, one row per (layer, step, option)
        load = [os.getloadavg()[0]]
        cloze_fast = run_phase("ig", path="fast", steps=steps, layers=None, readout="cloze", batch_size=None)
        cloze_ref = run_phase("ig", path="reference", steps=steps, layers=None, readout="cloze")
        cloze_err = np.abs(cloze_fast["scores"] - cloze_ref["scores"]).max() / np.abs(cloze_ref["scores"]).max()
        load.append(os.getloadavg()[0])
        out.update({
            "cloze_option_tokens": cloze_fast["option_tokens"],
            "cloze_fast_seconds": round(cloze_fast["seconds"], 3),
            "cloze_reference_seconds": round(cloze_ref["seconds"], 3),
            "cloze_speedup": round(cloze_ref["seconds"] / cloze_fast["seconds"], 1),
            "cloze_max_rel_err": float(cloze_err),
            "cloze_fast_peak_rss_gib": round(cloze_fast["peak_rss_gib"], 2),
            "cloze_reference_peak_rss_gib": round(cloze_ref["peak_rss_gib"], 2),
            "cloze_load_1min": [round(x, 2) for x in load],
        })
    else:
        out.update({k: v for k, v in before.items() if k.startswith("cloze_")})
    if errors:
        errs = run_phase("ig_errors", targets=TARGETS, steps=steps, layers=ERROR_LAYERS)
        errs.pop("peak_rss_gib", None)
        out["errors"] = {"layers": ERROR_LAYERS, "steps": steps, **errs}
    elif "errors" in before:
        out["errors"] = before["errors"]
    write("ig", out)


if __name__ == "__main__":
    args = sys.argv[1:]
    only = {"--cloze", "--errors"} & set(args)
    main(letter=not only, cloze=not only or "--cloze" in args, errors=not only or "--errors" in args)
