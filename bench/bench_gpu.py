"""Seconds and peak memory per question on a randomly initialised 7B-shaped LLaMA in bf16.

IG m = 16 over all 32 layers, fast vs reference path, and NeurGrad, on the bench's ~120-token
QATT question (letter read-out, option_prob), on CUDA: the measurement the README's 7B
memory estimate (from the batch-size rule) waits for.

Random weights give the real model's cost (the same shapes and the same work), not its
scores. The shape is LLaMA-2-7B's (4096 wide, 11008 FFN, 32 layers x 32 heads) but for the
vocabulary, which is the tokenizer's (SmolLM2's 49,152 rows instead of 32,000: +0.3 B
parameters in the embedding and the head). Writes bench/results/gpu.json: per phase the
seconds (best of `--repeat` after one warm-up call), the peak CUDA memory above the weights
(torch.cuda.max_memory_allocated), the batch size `engine.auto_batch_size` chose, and the
fast path's max relative error against the reference path.

On a CUDA machine (needs only torch, transformers, tqdm, scipy: lib/ on PYTHONPATH):
  PYTHONPATH=lib python bench/bench_gpu.py --tokenizer DIR    # DIR: a folder with tokenizer.json
Without --tokenizer the embedded model's tokenizer is used (`make setup`). A check of the
script itself, on a CPU in seconds:
  python bench/bench_gpu.py --shape tiny --device cpu --name gpu_tiny
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import question, write  # noqa: E402

SHAPES = {  # LlamaConfig fields; vocab_size comes from the tokenizer
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, max_position_embeddings=4096),
    "tiny": dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=4096),
}


def tokenizer_from(path: str | None):
    from transformers import AutoTokenizer

    if path:
        return AutoTokenizer.from_pretrained(path)
    import neuronloc

    return neuronloc.load_model("smollm2-135m").tokenizer


def random_llama(shape: str, tokenizer, device: str, dtype: torch.dtype):
    """A randomly initialised LlamaForCausalLM of `shape`, built on `device` in `dtype`."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from neuronloc.models import from_module

    cfg = LlamaConfig(vocab_size=len(tokenizer), attn_implementation="sdpa", **SHAPES[shape])
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    return from_module(model, tokenizer, name=f"random-llama-{shape}")


def measure(lm, fn, repeat: int) -> dict:
    """Best wall time of `repeat` calls of fn() after one warm-up, and the peak memory above
    what was allocated before (CUDA only)."""
    cuda = lm.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn(warmup=True)
    sync()
    seconds, result = float("inf"), None
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn(warmup=False)
        sync()
        seconds = min(seconds, time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if cuda else None
    return {"seconds": round(seconds, 3), "peak_above_weights_gib": None if peak is None else round(peak, 2)}, result


def main(shape: str = "7b", device: str | None = None, steps: int = 16, repeat: int = 2, tokenizer: str | None = None,
         name: str = "gpu") -> dict:
    from neuronloc.attribution import integrated_gradients
    from neuronloc.attribution.gradients import neurgrad
    from neuronloc.engine import auto_batch_size, make_query

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if shape == "7b" and not device.startswith("cuda"):  # 28 GB of float32 weights: not a CPU bench (`make bench`)
        print("bench_gpu: skipped, the 7B shape needs a CUDA device (--shape tiny --device cpu checks the script)")
        return {}
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    lm = random_llama(shape, tokenizer_from(tokenizer), device, dtype)
    site = lm.site()
    q = question()
    query = make_query(lm, q, readout="letter")
    weights_gib = sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**30
    context = len(query.prompt) + 1
    out = {"model": lm.name, "shape": SHAPES[shape], "vocab_size": len(lm.tokenizer), "device": device,
           "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None, "dtype": str(dtype),
           "torch": torch.__version__, "params_b": round(sum(p.numel() for p in lm.model.parameters()) / 1e9, 2),
           "weights_gib": round(weights_gib, 2), "prompt_tokens": len(query.prompt), "steps": steps,
           "layers": site.n_layers, "target": "option_prob", "readout": "letter",
           "auto_batch_size_rows": auto_batch_size(lm, site.n_layers, context)}

    def ig(path):
        def run(warmup):
            return integrated_gradients(lm, query, "option_prob", steps=1 if warmup else steps, rule="right",
                                        layers=[0] if warmup else None, path=path)
        return run

    def ng(warmup):
        return neurgrad(lm, q, target="option_prob", readout="letter").scores

    phases = {}
    phases["ig_fast"], fast = measure(lm, ig("fast"), repeat)
    phases["ig_reference"], ref = measure(lm, ig("reference"), 1)
    phases["neurgrad"], _ = measure(lm, ng, repeat)
    a, b = fast.double(), ref.double()
    out["phases"] = phases
    out["ig_speedup"] = round(phases["ig_reference"]["seconds"] / phases["ig_fast"]["seconds"], 2)
    out["ig_over_neurgrad"] = round(phases["ig_fast"]["seconds"] / phases["neurgrad"]["seconds"], 2)
    out["max_rel_err_fast_vs_reference"] = float((a - b).abs().max() / b.abs().max())
    write(name, out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--device", default=None, help="default: cuda when there is one")
    parser.add_argument("--steps", type=int, default=16, help="IG grid points (NeuronLLM m = 16)")
    parser.add_argument("--repeat", type=int, default=2, help="timed calls of the fast path and NeurGrad (best kept)")
    parser.add_argument("--tokenizer", default=None, help="a folder with tokenizer.json (default: the embedded model's)")
    parser.add_argument("--name", default="gpu", help="bench/results/<name>.json")
    args = parser.parse_args()
    main(args.shape, args.device, args.steps, args.repeat, args.tokenizer, args.name)
