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
    """Both paths timed the same way: one warm-up call on one layer and one step (kernels,
    allocator, the prefix cache's code paths), then the best of `repeat` full calls."""
    from neuronloc.attribution import integrated_gradients

    lm, query = _setup(readout)

    def run(layers=layers, steps=steps):
        return integrated_gradients(lm, query, "option_prob", steps=steps, rule="right", layers=layers, path=path,
                                    batch_size=batch_size)

    run([0], 1)
    seconds = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        scores = run()
        seconds = min(seconds, time.perf_counter() - t)
    return {"seconds": seconds, "scores": scores, "tokens": len(query.prompt),
            "option_tokens": [len(c) for c in query.continuations]}


def ig_errors(targets: list[str], steps: int, layers: list[int]) -> dict:
    """Max relative error (max |x - truth| / max |truth|) of the float32 fast and reference
    paths against the float64 reference run of the same model, per target."""
    import copy

    from neuronloc.attribution import integrated_gradients
    from neuronloc.engine import make_query
    from neuronloc.models import from_module
    from common import question

    lm, query = _setup()
    lm64 = from_module(copy.deepcopy(lm.model).double(), lm.tokenizer, name="smollm2-135m-float64")
    q64 = make_query(lm64, question())
    out = {}
    for target in targets:
        run = lambda model, q, path: integrated_gradients(model, q, target, steps=steps, layers=layers,
                                                          path=path).double()
        truth = run(lm64, q64, "reference")
        keep = ~torch.isnan(truth)
        scale = truth[keep].abs().max()
        err = lambda x: float((x[keep] - truth[keep]).abs().max() / scale)
        fast, ref = run(lm, query, "fast"), run(lm, query, "reference")
        out[target] = {"fast_vs_float64": err(fast), "reference_vs_float64": err(ref),
                       "fast_vs_reference": float((fast[keep] - ref[keep]).abs().max() / ref[keep].abs().max())}
    return out


def neurgrad(repeat: int = 3, threads: int | None = None) -> dict:
    """NeurGrad of every option vs one plain forward of the prompt, and its two parts: the
    prefix forward into the KV cache (compute-bound, ~ a forward) and the answer position's
    forward + batched backward (one position: memory-bound, every weight read about twice)."""
    from neuronloc.attribution import answer_position_grads
    from neuronloc.engine import decoder_of, prefix_cache
    from common import interleaved

    if threads:
        torch.set_num_threads(threads)
    lm, query = _setup()
    ids = query.prompt[None].to(lm.device)

    def forward():
        with torch.no_grad():
            return lm.model(input_ids=ids).logits

    def prefix():
        with torch.no_grad():
            return prefix_cache(lm, query.prefix)

    def prefix_to_the_end():  # the prefix forward without `prefix_cache`'s stop before the last FFN
        with torch.no_grad():
            return decoder_of(lm.model)(input_ids=query.prefix[None].to(lm.device), use_cache=True)

    options = torch.arange(query.n_options)
    fns = {"forward": forward, "neurgrad": lambda: answer_position_grads(lm, query, options, "answer_prob"),
           "prefix": prefix, "prefix_to_the_end": prefix_to_the_end}
    for fn in fns.values():
        fn()  # warm-up
    times = interleaved(fns, repeat)  # machine load hits all four alike
    ratios = sorted(n / f for n, f in zip(times["neurgrad"], times["forward"]))
    best = {k: min(v) for k, v in times.items()}
    return {"forward_seconds": best["forward"], "neurgrad_seconds": best["neurgrad"], "prefix_seconds": best["prefix"],
            "prefix_to_the_end_seconds": best["prefix_to_the_end"],
            "rows_seconds": best["neurgrad"] - best["prefix"], "median_ratio": ratios[len(ratios) // 2],
            "ratio_range": [ratios[0], ratios[-1]], "repetitions": repeat, "ratios": ratios,
            "threads": torch.get_num_threads(), "tokens": len(query.prompt), "n_options": query.n_options}


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
