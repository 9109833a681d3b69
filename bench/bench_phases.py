"""The measured phases (each runs in its own process, see common.run_phase)."""
from __future__ import annotations

import time

import torch


def _setup(readout: str = "letter"):
    import neuronloc as nl
    from neuronloc.engine import make_query
    from common import question

    lm = nl.load_model("smollm2-135m")
    return lm, make_query(lm, question(), readout=readout)


def ig(path: str, steps: int, layers: list[int] | None, batch_size: int | None = 128, repeat: int = 1,
       readout: str = "letter") -> dict:
    from neuronloc.attribution import integrated_gradients
    from common import timed

    lm, query = _setup(readout)
    run = lambda: integrated_gradients(lm, query, "option_prob", steps=steps, rule="right", layers=layers,
                                       path=path, batch_size=batch_size)
    if path == "reference":  # minutes per call: no warm-up, one timed call
        t = time.perf_counter()
        scores = run()
        seconds = time.perf_counter() - t
    else:
        seconds, scores = timed(run, repeat)
    return {"seconds": seconds, "scores": scores, "tokens": len(query.prompt),
            "option_tokens": [len(c) for c in query.continuations]}


def neurgrad(repeat: int = 3) -> dict:
    from neuronloc.attribution import answer_position_grads
    from common import timed

    lm, query = _setup()
    ids = query.prompt[None].to(lm.device)

    def forward():
        with torch.no_grad():
            return lm.model(input_ids=ids).logits

    t_forward, _ = timed(forward, repeat)
    options = torch.arange(query.n_options)
    t_neurgrad, (acts, grads, _) = timed(lambda: answer_position_grads(lm, query, options, "answer_prob"), repeat)
    return {"forward_seconds": t_forward, "neurgrad_seconds": t_neurgrad, "tokens": len(query.prompt),
            "n_options": query.n_options, "grads_shape": list(grads.shape)}


def ig_positions(path: str, steps: int, n_answer: int, layers: list[int] | None = None) -> dict:
    """CNL Eq. 7 on a GSM8K test question whose worked solution (teacher forced) is cut to
    n_answer tokens: the batched pass ("fast") or the per-position loop ("loop")."""
    import neuronloc as nl
    from neuronloc.attribution.ig import ig_positions as run_ig
    from neuronloc.engine import Query, make_query
    from neuronloc.tasks.loaders import load_examples
    from types import SimpleNamespace

    lm = nl.load_model("smollm2-135m")
    example = next(e for e in load_examples("gsm8k", "test")
                   if len(lm.tokenizer(e.meta["solution"])["input_ids"]) >= n_answer)
    query = make_query(lm, SimpleNamespace(prompt=example.prompt, answer=example.meta["solution"], uid=example.uid))
    query = Query(query.prompt, (query.answer_tokens[:n_answer],), uid=query.uid)
    run_ig(lm, Query(query.prompt, (query.answer_tokens[:2],)), "answer_prob", steps=2, layers=[0], path=path)  # warm-up
    t = time.perf_counter()  # minutes per call: one timed call
    scores = run_ig(lm, query, "answer_prob", steps=steps, layers=layers, path=path).scores
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "scores": scores, "prompt_tokens": len(query.prompt), "answer_tokens": n_answer,
            "uid": example.uid}
