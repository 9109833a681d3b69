"""Restricted fine-tuning (notebook 03, CNL §5.4 'Enhance'): Adam steps on the located
neurons' slices as small deltas (`interventions.slice_deltas`, the default) against the whole
FFN matrices with gradients masked to those slices (`sparse=False`, the path before), one epoch
of each interleaved, repetitions in one process on the machine's threads.

The work is one of 03's runs: batches of 8 Emotion training answers (~60-token prompts), 200
located neurons spread over the layers (the Emotion sigma-6 mask holds ~0.4 % of 46,080).

Writes bench/results/finetune.json: seconds per step of each path (median of the repetitions),
the ratio and its range, and the largest weight difference after one epoch from the same start.
"""
from __future__ import annotations

import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import speedup, write  # noqa: E402


def main(n_batches: int = 6, n_neurons: int = 200, repetitions: int = 3) -> None:
    import torch

    import neuronloc as nl
    from neuronloc.interventions import answer_batches, random_neurons, restricted_finetune
    from neuronloc.tasks.loaders import load_examples

    lm = nl.load_model("smollm2-135m")
    site = lm.site("ffn.mid")
    examples = load_examples("emotion", "train", 8 * n_batches, 0)
    batches = answer_batches(lm, [(e.prompt, " " + e.answer) for e in examples], 8)
    neurons = random_neurons(site, n_neurons, seed=0)
    start = copy.deepcopy(lm.model.state_dict())

    def epoch(sparse: bool):
        lm.model.load_state_dict(start)
        t = time.perf_counter()
        restricted_finetune(lm, site, neurons, batches, lr=1e-4, epochs=1, progress=False, sparse=sparse)
        return (time.perf_counter() - t) / len(batches), {k: v.clone() for k, v in lm.model.state_dict().items()}

    _, a = epoch(True)  # warm-up, and the check
    _, b = epoch(False)
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    runs = {"sparse": [], "masked": []}
    for _ in range(repetitions):
        for name, sparse in (("sparse", True), ("masked", False)):
            runs[name].append(epoch(sparse)[0])
    write("finetune", {"model": "smollm2-135m", "device": "cpu", "threads": torch.get_num_threads(),
                       "batch": 8, "steps_per_epoch": len(batches), "neurons": n_neurons, "repetitions": repetitions,
                       "sparse_s_per_step": round(statistics.median(runs["sparse"]), 3),
                       "masked_s_per_step": round(statistics.median(runs["masked"]), 3),
                       **speedup(runs["masked"], runs["sparse"]), "max_weight_difference": diff})


if __name__ == "__main__":
    main()
