"""The LM head on a batch of rows read at their last positions (`logits_to_keep`), with and
without `models.contiguous_input`, interleaved in one process on the machine's threads.

transformers hands the head a strided slice of the last hidden states; torch's linear runs
such a `[rows, k, d]` input as one product per row against the expanded `[vocab, d]` weight
(`aten::bmm`), reading the head once per row. The shape measured is notebook 01's trace
forward: 310 rows (10 noise draws x 31 restorations) x 2 positions after the prefix.

Writes bench/results/head.json: seconds of the forward with and without the copy (median of
the repetitions and the range), their ratio, and the largest logit difference.
"""
from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved, speedup, write  # noqa: E402


def main(rows: int = 310, positions: int = 2, repetitions: int = 5) -> None:
    import torch

    import neuronloc as nl

    lm = nl.load_model("smollm2-135m")
    head = lm.model.get_output_embeddings()
    ids = torch.randint(100, 10_000, (rows, positions), generator=torch.Generator().manual_seed(0))

    def forward():
        with torch.no_grad():
            return lm.model(input_ids=ids, logits_to_keep=1).logits

    def without():
        handle = next(iter(head._forward_pre_hooks))
        hook = head._forward_pre_hooks.pop(handle)
        try:
            return forward()
        finally:
            head._forward_pre_hooks[handle] = hook

    diff = float((forward() - without()).abs().max())  # warm-up, and the check
    runs = interleaved({"contiguous": forward, "strided": without}, repetitions)
    write("head", {"model": "smollm2-135m", "device": "cpu", "threads": torch.get_num_threads(), "rows": rows,
                   "positions": positions, "repetitions": repetitions,
                   "contiguous_seconds": round(statistics.median(runs["contiguous"]), 4),
                   "strided_seconds": round(statistics.median(runs["strided"]), 4),
                   **speedup(runs["strided"], runs["contiguous"]), "max_logit_difference": diff})


if __name__ == "__main__":
    main()
