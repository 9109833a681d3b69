"""Integrated gradients over FFN neurons (NeuronLLM Eq. 1/4, KN, CNL Eq. 5/7).

For layer l, the neuron vector a at the answer position is replaced by alpha*a for
alpha on a grid; IG = a * mean over the grid of dF/da.
  rule="right":    alpha = k/m, k = 1..m              (NeuronLLM, m = 16)
  rule="linspace": alpha = linspace(0, 1, m)          (KN / NEG reference code)

Two paths give the same numbers:
  reference: the full sequence, one batch of m alphas per layer (KN/NEG code).
  fast:      only the answer position changes, so every earlier position is the
             same for all alphas and layers: run the prompt prefix once into a KV
             cache, then re-run only the answer position (plus teacher-forced answer
             tokens) for all (layer, alpha) pairs in large batches, with one backward
             per batch giving every layer's gradients.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

from ..hooks import neuron_hooks
from ..models import LM
from ..targets import OPTION_LOGITS_ONLY, get_target
from .base import NeuronScores, Query, cached_rows, head_rows, logits_from, make_query, prefix_cache, register, resolve_layers


def alphas(steps: int, rule: str = "right") -> torch.Tensor:
    """The IG grid `[steps]`."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if rule == "right":
        return torch.arange(1, steps + 1, dtype=torch.float64) / steps
    if rule == "linspace":
        return torch.linspace(0, 1, steps, dtype=torch.float64)
    raise ValueError(f"unknown IG rule {rule!r}; use 'right' or 'linspace'")


def _run_rows(lm: LM, site, rows: list[tuple[int, float]], tokens: torch.Tensor, at: int, cache,
              query: Query, target, inputs: dict | None = None) -> tuple[dict, dict]:
    """One batched forward+backward: row r scales layer rows[r][0] by alpha rows[r][1]
    at sequence index `at` of `tokens` (`[seq]`, run after `cache` if given).

    inputs: {layer: the unedited input of that decoder layer `[1, seq, d]`}. When given
    (fast path), rows are sorted by layer and row r only exists from its own layer
    on: the batch starts as one driver row and each decoder layer appends its rows,
    restarted from that layer's input, so layers below a row's edit are not re-run.
    Returns ({layer: sum of dF/da over its rows `[n_inner]`}, {layer: unscaled a `[n_inner]`}).
    """
    device = lm.device
    batch = len(rows)
    by_layer: dict[int, list[int]] = {}
    for r, (layer, _) in enumerate(rows):
        by_layer.setdefault(layer, []).append(r)
    alpha = torch.tensor([a for _, a in rows])
    probes, bases = {}, {}

    def make(layer, idx):
        idx_t = torch.tensor(idx)

        def fn(t):  # t: [rows so far, seq, n_inner], on this layer's device (device_map may split the model)
            idx_d = idx_t.to(t.device)
            base = t[idx_d, at]  # rows of this layer are unedited up to here: all equal a
            bases[layer] = base[0].detach().float().cpu()
            probe = torch.zeros_like(base, requires_grad=True)
            probes[layer] = probe
            edited = t.clone()
            edited[idx_d, at] = alpha[idx].to(t.device, t.dtype)[:, None] * base + probe
            return edited
        return fn

    n_ans = len(query.answer)
    if inputs is None:
        ids, sizes, restart = tokens[None].expand(batch, -1).to(device), batch, {}
    else:
        assert all(a[0] <= b[0] for a, b in zip(rows, rows[1:])), "restart needs rows sorted by layer"
        first = rows[0][0]  # below it, one driver row runs
        sizes = [1 if layer < first else sum(l <= layer for l, _ in rows) for layer in range(site.n_layers)]
        ids = tokens[None].to(device)
        restart = {l: (inputs[l], len(i), l == first) for l, i in by_layer.items()}
    only_options = target in OPTION_LOGITS_ONLY and query.options is not None
    with torch.enable_grad(), neuron_hooks(lm.model, site, {l: make(l, i) for l, i in by_layer.items()}), \
            _restart_rows(lm.model, site, restart), cached_rows(lm, cache, sizes, len(tokens)) as past, \
            head_rows(lm, query.options if only_options else None):
        out = lm.model(input_ids=ids, past_key_values=past, use_cache=cache is not None,
                       **logits_from(lm.model, len(tokens) - at))
        start = at - (len(tokens) - out.logits.shape[1])  # the head ran only from position `at` on
        logits = out.logits[:, start: start + n_ans]  # [batch, n_answer, vocab or n_options]
        answer, options = query.answer.to(logits.device), query.options
        if only_options:  # one answer token; logits[..., j] is option j's logit
            answer = (options == query.answer[0]).nonzero()[0].to(logits.device)
            options = torch.arange(len(options))
        options = None if options is None else options.to(logits.device)
        total = sum(target(logits[:, j], answer[j].expand(batch), options) for j in range(n_ans)).sum()
        grads = torch.autograd.grad(total, [probes[l] for l in by_layer])
    sums = {l: g.float().sum(dim=0).cpu() for l, g in zip(by_layer, grads)}
    return sums, bases


@contextmanager
def _layer_input_hooks(model, site, fns: dict):
    """Decoder-layer pre-hooks: fns[layer](hidden `[batch, seq, d]`) may return a
    replacement for that layer's input hidden states. Always removed on exit."""
    handles = []

    def wrap(fn):
        def pre(module, args, kwargs):
            h = fn(args[0] if args else kwargs["hidden_states"])
            if h is None:
                return None
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})
        return pre

    try:
        for layer, fn in fns.items():
            block = model.get_submodule(f"{site.layers_path}.{layer}")
            handles.append(block.register_forward_pre_hook(wrap(fn), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _restart_rows(model, site, restart: dict):
    """At layer l append n rows equal to l's unedited input (replace the one driver
    row at the first layer)."""
    def make(hidden, n, replace):
        def fn(h):
            new = hidden.to(h.dtype).expand(n, -1, -1)
            return new if replace else torch.cat([h, new])
        return fn

    return _layer_input_hooks(model, site, {l: make(*spec) for l, spec in restart.items()})


@torch.no_grad()
def layer_inputs(lm: LM, site, tokens: torch.Tensor, cache) -> dict:
    """The unedited input of every decoder layer for `tokens` run after `cache`: {layer: `[1, seq, d]`}."""
    seen = {}
    record = {layer: (lambda h, layer=layer: seen.__setitem__(layer, h.detach())) for layer in range(site.n_layers)}
    with _layer_input_hooks(lm.model, site, record), cached_rows(lm, cache, 1, len(tokens)) as past:
        lm.model(input_ids=tokens[None].to(lm.device), past_key_values=past, use_cache=cache is not None)
    return seen


def integrated_gradients(lm: LM, query: Query, target="option_prob", steps: int = 16, rule: str = "right",
                         layers=None, site: str = "ffn.mid", path: str = "fast", batch_size: int | None = None,
                         cache=None, restart: bool = True) -> torch.Tensor:
    """IG of every neuron at `query.position`: `[layer, neuron]` (NaN for skipped layers).

    path="fast" (KV-cached prefix, all layers batched) or "reference" (full sequence,
    one batch of alphas per layer). `cache` may hold a precomputed prefix cache
    whose length is at least query.position (it is sliced, not modified).
    restart (fast path): rows skip the layers below their own edit (see `_run_rows`).
    batch_size: (layer, alpha) rows per forward; None = `auto_batch_size`.
    """
    site_ = lm.site(site)
    target = get_target(target)
    grid = alphas(steps, rule).tolist()
    layers = resolve_layers(site_, layers)
    scores = torch.full((site_.n_layers, site_.n_inner), float("nan"))
    grad_sum = {l: torch.zeros(site_.n_inner) for l in layers}
    base = {}
    if path == "reference":
        for layer in layers:
            sums, bases = _run_rows(lm, site_, [(layer, a) for a in grid], query.input_ids, query.position, None, query, target)
            grad_sum[layer] += sums[layer]
            base.update(bases)
    elif path == "fast":
        cache = prefix_cache(lm, query.prefix) if cache is None else _crop(cache, query.position)
        inputs = layer_inputs(lm, site_, query.suffix, cache) if restart else None
        rows = [(l, a) for l in layers for a in grid]
        batch_size = batch_size or auto_batch_size(lm, site_, len(query.input_ids))
        for start in range(0, len(rows), batch_size):
            sums, bases = _run_rows(lm, site_, rows[start:start + batch_size], query.suffix, 0, cache, query, target, inputs)
            for l, g in sums.items():
                grad_sum[l] += g
            base.update(bases)
    else:
        raise ValueError(f"unknown IG path {path!r}; use 'fast' or 'reference'")
    for l in layers:
        scores[l] = base[l] * grad_sum[l] / steps
    return scores


def auto_batch_size(lm: LM, site, context: int, most: int = 128) -> int:
    """Rows per fast-path batch that fit a memory budget.

    Where rows cannot share the cached prefix (families without
    `prefix_attention`), each row materialises, per layer, its own keys and values
    over the whole context and their gradients: about 4 x n_layers x kv_heads x
    context x head_dim elements. We size batches by that bound for every family (an
    over-estimate where the prefix is shared). Budget: half the free CUDA memory, or
    $NEURONLOC_MEMORY_GIB (default 2) GiB on the CPU; at most `most` rows (larger CPU
    batches measured slower).
    """
    cfg = lm.model.config.get_text_config() if hasattr(lm.model.config, "get_text_config") else lm.model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    per_row = 4 * site.n_layers * kv_heads * context * head_dim * torch.finfo(lm.dtype).bits // 8
    if lm.device.type == "cuda":
        budget = torch.cuda.mem_get_info(lm.device)[0] / 2
    else:
        budget = float(os.environ.get("NEURONLOC_MEMORY_GIB", "2")) * 2**30
    return int(max(1, min(most, budget // per_row)))


def _crop(cache, length: int):
    """A view of `cache` holding only its first `length` positions."""
    if cache is None or length == 0:
        return None
    from transformers import DynamicCache

    view = DynamicCache()
    for i, layer in enumerate(cache.layers):
        view.update(layer.keys[:, :, :length], layer.values[:, :, :length], i)
    return view


@register("ig")
def ig(lm: LM, question, target: str = "option_prob", steps: int = 16, rule: str = "right", layers=None,
       site: str = "ffn.mid", path: str = "fast", batch_size: int | None = None, chat: bool = False) -> NeuronScores:
    """Integrated gradients at the answer position (NeuronLLM Eq. 1, KN).

    A multi-token free-form answer is teacher forced and its per-token targets are
    summed (NeuronLLM Eq. 2 with target="answer_logprob").
    """
    query = make_query(lm, question, chat=chat)
    scores = integrated_gradients(lm, query, target, steps, rule, layers, site, path, batch_size)
    params = dict(steps=steps, rule=rule, path=path, layers=layers)
    return NeuronScores(scores, "ig", site, params, {"target": str(target), "uid": query.uid})


@register("ig_positions")
def ig_positions(lm: LM, question, target: str = "answer_prob", steps: int = 20, layers=None,
                 site: str = "ffn.mid", batch_size: int | None = None, path: str = "fast") -> NeuronScores:
    """CNL Eq. 7 for one example: mean over answer tokens m of the IG at the position
    predicting y_m, with z_m = x + y_<m teacher forced, target P(y_m | z_m).

    CNL sums S+1 grid points n/S (n = 0..S, S = 19) and divides by S: steps = S+1
    linspace points, and the mean over points is rescaled by (S+1)/S to match.
    """
    if steps < 2:
        raise ValueError("ig_positions needs steps >= 2 (S + 1 grid points, S >= 1)")
    query = make_query(lm, question)
    n = len(query.answer)
    cache = prefix_cache(lm, query.input_ids[: query.position + n - 1]) if path == "fast" else None
    if cache is not None and any(getattr(layer, "is_sliding", False) for layer in cache.layers):
        cache = None  # a sliding-window cache cannot be cut back to each position's prefix
    total = None
    for m in range(n):
        end = query.position + m + 1
        sub = Query(query.input_ids[:end], end - 1, query.answer[m: m + 1], None, query.uid)
        s = integrated_gradients(lm, sub, target, steps, "linspace", layers, site, path, batch_size, cache=cache)
        total = s if total is None else total + s
    scores = total / n * steps / (steps - 1)
    params = dict(steps=steps, rule="linspace", layers=layers, path=path)
    return NeuronScores(scores, "ig_positions", site, params, {"target": str(target), "uid": query.uid, "n_answer": n})
