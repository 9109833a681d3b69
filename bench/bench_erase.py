"""Erase throughput (notebook 03, CNL §5.4): questions read with FFN neurons' weights zeroed,
one neuron set after another (`zeroed` + `evaluate_options`, the path before
`evaluate_zeroed`) against every set of a question as rows of one batch (`evaluate_zeroed`),
interleaved repetitions in one process on the machine's threads.

The work is notebook 03's erase of one data set: 13 sets (base, 3 sigma masks, 4 random
draws, KN and 2 KN draws, 2 other data sets' masks; ~100-650 neurons each) on GSM8K
questions under the cloze_norm read-out (~60-token prompts, 4 multi-token options).
Both paths make the same forwards' FLOPs (a zeroed neuron still runs); the batched one
runs a question's 13 prefixes as one 13-row forward. Also checks that they agree.

Writes bench/results/erase.json: seconds per question and set for each path, the ratio
(median of the repetitions and its spread), and the largest probability difference.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved, speedup, write  # noqa: E402


def main(n_questions: int = 12, repetitions: int = 5) -> None:
    import numpy as np
    import torch

    import neuronloc as nl
    from neuronloc.experiments.cnl import data_splits
    from neuronloc.interventions import evaluate_options, evaluate_zeroed, random_neurons, zeroed
    from neuronloc.tasks.loaders import as_choices

    lm = nl.load_model("smollm2-135m")
    site = lm.site("ffn.mid")
    questions = as_choices(data_splits("gsm8k", 8, 0, n_questions, 0, 350)["eval"], 4, "cloze_norm", seed=0)
    sizes = (0, 486, 111, 30, 486, 111, 111, 30, 200, 200, 200, 114, 90)  # notebook 03's GSM8K erase (SCALE=default)
    sets = [random_neurons(site, k, seed=s) if k else [] for s, k in enumerate(sizes)]

    def one_by_one():
        out = []
        for s in sets:
            with zeroed(lm, site, s):
                out.append(evaluate_options(lm, questions))
        return out

    def batched():
        return evaluate_zeroed(lm, questions, sets, site)

    a, b = one_by_one(), batched()  # warm-up, and the check
    diff = max(float((x.probs - y.probs).abs().max()) for x, y in zip(a, b))
    runs = interleaved({"one_by_one": one_by_one, "batched": batched}, repetitions)
    work = n_questions * len(sets)
    write("erase", {
        "model": "smollm2-135m", "device": "cpu", "threads": torch.get_num_threads(), "task": "gsm8k (cloze_norm)",
        "questions": n_questions, "neuron_sets": len(sets), "repetitions": repetitions,
        "one_by_one_s_per_question_set": round(float(np.median(runs["one_by_one"])) / work, 4),
        "batched_s_per_question_set": round(float(np.median(runs["batched"])) / work, 4),
        **speedup(runs["one_by_one"], runs["batched"]),
        "max_probability_difference": float(f"{diff:.2g}"),
    })


if __name__ == "__main__":
    main()
