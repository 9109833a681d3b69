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
             tokens) for all (layer, alpha) conditions in large batches, with one
             backward per batch giving every layer's gradients (`neuronloc.engine`).
CNL Eq. 7 (`ig_positions`) needs this at every answer position: `positions_batched`
runs them all in one pass (each row holds every answer position as an independent
query over the cached prefix); path="loop" keeps one fast IG per position as its reference.
"""
from __future__ import annotations

import warnings

import torch

from ..engine import (Layout, Query, auto_batch_size, crop_cache, forward_rows, layer_inputs, logits_from,
                      make_query, option_logits_suffice, prefix_cache, resolve_layers, restart_plan, restart_rows,
                      rows_layout, with_cache)
from ..hooks import capture, neuron_hooks
from ..models import LM
from ..targets import get_target
from .base import NeuronScores, register


def alphas(steps: int, rule: str = "right") -> torch.Tensor:
    """The IG grid `[steps]`."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if rule == "right":
        return torch.arange(1, steps + 1, dtype=torch.float64) / steps
    if rule == "linspace":
        return torch.linspace(0, 1, steps, dtype=torch.float64)
    raise ValueError(f"unknown IG rule {rule!r}; use 'right' or 'linspace'")


def _scale_hook(layer: int, idx: list[int], alpha: torch.Tensor, at, probes: dict, bases: dict):
    """The IG edit of one layer: rows `idx` get alpha[row] * a + probe at positions `at` (an
    index, or a slice: every position of the row); records the probe and the unscaled a."""
    idx_t = torch.tensor(idx)

    def fn(t):  # t: [rows so far, seq, n_inner], on this layer's device (device_map may split the model)
        idx_d = idx_t.to(t.device)
        base = t[idx_d, at]  # rows of this layer are unedited up to here: all equal a
        bases[layer] = base[0].detach().float().cpu()
        probe = torch.zeros_like(base, requires_grad=True)
        probes[layer] = probe
        edited = t.clone()
        scale = alpha[idx].to(t.device, t.dtype).reshape(-1, *[1] * (base.ndim - 1))
        edited[idx_d, at] = scale * base + probe
        return edited
    return fn


def _run_rows(lm: LM, site, conditions: list[tuple[int, float]], query: Query, cache, target, full: bool,
              inputs: dict | None = None, option_logits: bool = False,
              counted: list[bool] | None = None) -> tuple[dict, dict, torch.Tensor]:
    """One batched forward+backward: condition c scales layer conditions[c][0] by alpha
    conditions[c][1] at the answer position (`Layout`: one row per condition, or one per
    option for multi-token continuations).

    full: rows hold the whole prompt (reference path); else they follow `cache`.
    inputs: {layer: the unedited input of that decoder layer `[rows per condition, seq, d]`}.
    When given (fast path), conditions are sorted by layer and exist only from their own
    layer on: the batch starts as one driver condition and each decoder layer appends its
    conditions, restarted from that layer's input, so layers below an edit are not re-run.
    counted: per condition, whether its gradient enters the sums (default all); the others
    only read F (the completeness check's alpha = 0 rows).
    Returns ({layer: sum of dF/da over its counted rows `[n_inner]`}, {layer: unscaled a
    `[n_inner]`}, F of every condition `[conditions]`).
    """
    layout = Layout(query, len(conditions), full=True) if full else rows_layout(lm, query, len(conditions), cache)
    per = layout.per_condition
    by_layer: dict[int, list[int]] = {}
    for c, (layer, _) in enumerate(conditions):
        by_layer.setdefault(layer, []).extend(layout.condition_rows(c))
    alpha = torch.tensor([a for _, a in conditions]).repeat_interleave(per)  # one per row
    probes, bases = {}, {}

    n_input, sizes, restart = None, None, {}
    if inputs is not None:  # one driver condition below the first layer, then each at its own
        n_input = 1
        sizes, restart = restart_plan([l for l, _ in conditions], per, site.n_layers, inputs)
    answers = torch.full((len(conditions),), query.answer)
    hooks = {l: _scale_hook(l, i, alpha, layout.at, probes, bases) for l, i in by_layer.items()}
    with torch.enable_grad(), neuron_hooks(lm.model, site, hooks), restart_rows(lm.model, restart):
        scores = forward_rows(lm, layout, cache, option_logits, n_input, sizes)
        values = target(scores, answers)
        weight = torch.ones(len(conditions)) if counted is None else torch.tensor(counted, dtype=torch.float32)
        total = (values * weight.to(values.device, values.dtype)).sum()
        grads = torch.autograd.grad(total, [probes[l] for l in by_layer])
    sums = {l: g.float().sum(dim=0).cpu() for l, g in zip(by_layer, grads)}
    return sums, bases, values.detach().double().cpu()


def integrated_gradients(lm: LM, query: Query, target="option_prob", steps: int = 16, rule: str = "right",
                         layers=None, site: str = "ffn.mid", path: str = "fast", batch_size: int | None = None,
                         cache=None, restart: bool = True, completeness: dict | None = None) -> torch.Tensor:
    """IG of every neuron at `query.position`: `[layer, neuron]` (NaN for skipped layers).

    path="fast" (KV-cached prefix, all layers batched) or "reference" (full sequence,
    one batch of alphas per layer). `cache` may hold a precomputed prefix cache at
    least as long as `query.prefix` (it is sliced, not modified).
    restart (fast path): rows skip the layers below their own edit (see `_run_rows`).
    batch_size: (layer, alpha) conditions per forward (each takes one row, or one per
    option for multi-token continuations); None = `auto_batch_size`.
    completeness: a dict to fill with {layer: (sum of the layer's IG, F(a) - F(0))}, the
    completeness axiom's two sides (`check_completeness`). F(a) is the alpha = 1 row of
    the grid; F(0) the linspace grid's alpha = 0 row, or (rule "right") one extra row per
    layer that reads F without entering the sums.
    """
    site_ = lm.site(site)
    target = get_target(target)
    grid = alphas(steps, rule).tolist()
    layers = resolve_layers(site_.n_layers, layers)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # alphas run per layer: the grid, and the ends the completeness check reads if the grid lacks them
    points = grid + ([a for a in (1.0, 0.0) if a not in grid] if completeness is not None else [])
    counted = [True] * len(grid) + [False] * (len(points) - len(grid))
    scores = torch.full((site_.n_layers, site_.n_inner), float("nan"))
    grad_sum = {l: torch.zeros(site_.n_inner) for l in layers}
    base, value = {}, {}  # value: {(layer, alpha): F}
    # the head computes only the option logits where the target needs only their differences
    option_logits = option_logits_suffice(query, target)
    if path == "reference":
        for layer in layers:
            conditions = [(layer, a) for a in points]
            sums, bases, values = _run_rows(lm, site_, conditions, query, None, target, True,
                                            option_logits=option_logits, counted=counted)
            grad_sum[layer] += sums[layer]
            base.update(bases)
            value.update(zip(conditions, values.tolist()))
    elif path == "fast":
        cache = prefix_cache(lm, query.prefix) if cache is None else crop_cache(cache, len(query.prefix))
        layout = rows_layout(lm, query, 1, cache)
        inputs = layer_inputs(lm, layout, cache) if restart else None
        conditions = [(l, a) for l in layers for a in points]
        weights = counted * len(layers)
        context = len(query.prompt) + layout.width
        batch_size = batch_size or max(1, auto_batch_size(lm, site_.n_layers, context) // layout.per_condition)
        for start in range(0, len(conditions), batch_size):
            batch = conditions[start:start + batch_size]
            sums, bases, values = _run_rows(lm, site_, batch, query, cache, target, False, inputs, option_logits,
                                            weights[start:start + batch_size])
            for l, g in sums.items():
                grad_sum[l] += g
            base.update(bases)
            value.update(zip(batch, values.tolist()))
    else:
        raise ValueError(f"unknown IG path {path!r}; use 'fast' or 'reference'")
    for l in layers:
        scores[l] = base[l] * grad_sum[l] / steps
    if completeness is not None:
        for l in layers:
            completeness[l] = (scores[l].double().sum().item(), value[l, 1.0] - value[l, 0.0])
    return scores


def check_completeness(completeness: dict, tolerance: float = 0.1, floor: float = 1e-3) -> dict:
    """The layers whose IG misses the completeness axiom: {layer: (sum IG, F(a) - F(0))} where
    |sum IG - (F(a) - F(0))| > max(tolerance * |F(a) - F(0)|, floor) (Captum's convergence delta).

    A flat-then-steep path (e.g. FFN neurons feeding a normalisation, Gemma 2/3's
    post_feedforward_layernorm: scaling them by alpha changes little until alpha nears 0)
    puts most of the integral where a coarse grid has no point. More steps fix it (the gap
    shrinks as the grid refines); rule "right" never samples alpha = 0, "linspace" does.
    """
    return {l: (s, d) for l, (s, d) in completeness.items() if abs(s - d) > max(tolerance * abs(d), floor)}


class CompletenessWarning(UserWarning):
    """IG missed the completeness check on some layers (`check_completeness`). Its own
    category, so a caller can route it: `warnings.filterwarnings("error", category=...)`
    to stop on it, or "ignore" where the gaps are reported another way (the notebooks:
    nbval compares stderr; 00_quickstart shows the layers that miss)."""


_WARNED: set = set()  # (model, site, target, steps, rule) already warned about in this process


def _warn_incomplete(lm: LM, key: tuple, missed: dict, steps: int, rule: str) -> None:
    if not missed or (lm.name, *key) in _WARNED:
        return
    _WARNED.add((lm.name, *key))
    detail = "; ".join(f"layer {l}: sum IG {s:+.3g} vs F(a) - F(0) {d:+.3g}" for l, (s, d) in sorted(missed.items()))
    advice = "raise steps" if rule == "linspace" else "raise steps (or use rule 'linspace', which samples alpha = 0)"
    warnings.warn(f"integrated gradients on {lm.name} ({rule}, {steps} steps) miss the completeness check on "
                  f"{len(missed)} layer(s): {detail}. The path is too steep for the grid: {advice}; "
                  f"NeuronScores.meta['completeness'] has every layer. Warned once per setting.",
                  CompletenessWarning, stacklevel=3)


@register("ig")
def ig(lm: LM, question, target: str = "option_prob", steps: int = 16, rule: str = "right", layers=None,
       site: str = "ffn.mid", path: str = "fast", batch_size: int | None = None, chat: bool = False,
       readout: str | None = None) -> NeuronScores:
    """Integrated gradients at the answer position (NeuronLLM Eq. 1, KN).

    A multi-token answer (free form, or an option text under a cloze read-out) is
    teacher forced and its log-probabilities summed (NeuronLLM Eq. 2).
    """
    query = make_query(lm, question, chat=chat, readout=readout)
    completeness = {}
    scores = integrated_gradients(lm, query, target, steps, rule, layers, site, path, batch_size,
                                  completeness=completeness)
    _warn_incomplete(lm, (site, str(target), steps, rule), check_completeness(completeness), steps, rule)
    params = dict(steps=steps, rule=rule, path=path, layers=layers, readout=query.readout)
    return NeuronScores(scores, "ig", site, params, {"target": str(target), "uid": query.uid,
                                                     "completeness": completeness})


def positions_batched(lm: LM, query: Query, target="answer_prob", steps: int = 20, layers=None,
                      site: str = "ffn.mid", batch_size: int | None = None) -> torch.Tensor | None:
    """Sum over the answer tokens m of the IG at the position predicting y_m (linspace
    grid): `[layer, neuron]`, every answer position in one pass (CNL Eq. 7, batched).

    Rows are (layer, alpha) conditions; a row holds the n teacher-forced positions
    predicting y_0 .. y_{n-1}, all scaled by alpha at that layer, each attending to the
    clean prefix before it and to itself only (`prefix_attention`, independent
    positions): position m of a row is the per-position run for y_m, so one backward per
    batch gives every (m, layer) gradient. Rows restart at their layer's clean input.
    None where the family's attention cannot be shared (then use the per-position loop).
    """
    from .. import prefix_attention
    from transformers import DynamicCache

    site_ = lm.site(site)
    target = get_target(target)
    answer = query.answer_tokens
    n, offset = len(answer), query.position
    tokens = torch.cat([query.prompt, answer[:-1]])  # position offset + m predicts y_m
    if not lm.family.shared_prefix or len(tokens) < 2:
        return None
    grid = alphas(steps, "linspace").float()
    layers = resolve_layers(site_.n_layers, layers)
    # one clean forward: the prefix keys/values (every one kept, also under a sliding window)
    # and each layer's input at the n answer positions, where rows restart
    full = DynamicCache()
    with torch.no_grad(), capture(lm.model, lm.site("resid.pre"), positions=list(range(offset, len(tokens)))) as clean:
        lm.model(input_ids=tokens[None].to(lm.device), **with_cache(lm.model, full), use_cache=True, **logits_from(lm.model, 1))
    cache = crop_cache(full, len(tokens) - 1)
    conditions = [(l, a) for l in layers for a in range(steps)]
    context = len(tokens)
    batch_size = batch_size or max(1, min(auto_batch_size(lm, site_.n_layers, context), TOKEN_ROWS // n))
    ids = tokens[offset:][None].to(lm.device)
    position_ids = torch.arange(offset, offset + n, device=lm.device)[None]
    picks = torch.arange(n, device=lm.device)
    total = torch.full((site_.n_layers, site_.n_inner), float("nan"))
    for l in layers:
        total[l] = 0.0
    for start in range(0, len(conditions), batch_size):
        batch = conditions[start:start + batch_size]
        by_layer: dict[int, list[int]] = {}
        for c, (layer, _) in enumerate(batch):
            by_layer.setdefault(layer, []).append(c)
        alpha = grid[[a for _, a in batch]]
        probes, bases = {}, {}
        hooks = {l: _scale_hook(l, i, alpha, slice(None), probes, bases) for l, i in by_layer.items()}
        restart = {l: (clean.acts[l], len(i), l == batch[0][0]) for l, i in by_layer.items()}
        with torch.enable_grad(), neuron_hooks(lm.model, site_, hooks), restart_rows(lm.model, restart), \
                prefix_attention.shared_prefix(lm, cache, offset) as past:
            logits = lm.model(input_ids=ids, **with_cache(lm.model, past), position_ids=position_ids,
                              use_cache=True).logits
            logp = logits.float().log_softmax(-1)[:, picks, answer.to(lm.device)]  # [rows, n]: log P(y_m | z_m)
            value = target(logp.reshape(-1, 1), torch.zeros(logp.numel(), dtype=torch.long)).sum()
            grads = torch.autograd.grad(value, [probes[l] for l in by_layer])
        for l, g in zip(by_layer, grads):  # IG_m = a_m * sum over alphas of dF_m/da_m / steps, summed over m
            total[l] += (bases[l] * g.float().sum(dim=0).cpu()).sum(dim=0) / steps
    return total


TOKEN_ROWS = 1024  # positions per batched forward of `positions_batched` (rows x answer length)


@register("ig_positions")
def ig_positions(lm: LM, question, target: str = "answer_prob", steps: int = 20, layers=None,
                 site: str = "ffn.mid", batch_size: int | None = None, path: str = "fast") -> NeuronScores:
    """CNL Eq. 7 for one free-form example: mean over answer tokens m of the IG at the
    position predicting y_m, with z_m = x + y_<m teacher forced, target P(y_m | z_m).

    CNL sums S+1 grid points n/S (n = 0..S, S = 19) and divides by S: steps = S+1
    linspace points, and the mean over points is rescaled by (S+1)/S to match.
    path: "fast" (every answer position in one pass, `positions_batched`; families
    without shared-prefix attention, e.g. Gemma 2/3 and GPT-2, run the loop), "loop"
    (one fast IG per answer position: the reference of the batched pass) or
    "reference" (one full-sequence IG per position).
    A multiple-choice question keeps its options when every option is one token (a
    letter read-out): the answer has one position, where the options are compared, so
    every target applies (option_prob, prob_margin too). Options of several tokens have
    no one position to compare them at: refused (use `ig`, NeuronLLM Eq. 2).
    """
    if steps < 2:
        raise ValueError("ig_positions needs steps >= 2 (S + 1 grid points, S >= 1)")
    if path not in ("fast", "loop", "reference"):
        raise ValueError(f"unknown ig_positions path {path!r}; use 'fast', 'loop' or 'reference'")
    query = make_query(lm, question)
    if query.n_options != 1:
        if any(len(c) != 1 for c in query.continuations):
            raise ValueError(f"ig_positions on a multiple-choice question needs one-token options (read-out "
                             f"'letter'; this one is {query.readout!r}): Eq. 7 scores each answer token at its own "
                             f"position, and options of several tokens share no position to be compared at. "
                             f"Use ig (Eq. 2: each option's summed log-probability) or a free-form example")
        one = "reference" if path == "reference" else "fast"
        scores = integrated_gradients(lm, query, target, steps, "linspace", layers, site, one, batch_size)
        scores = scores * steps / (steps - 1)
        params = dict(steps=steps, rule="linspace", layers=layers, path=path)
        return NeuronScores(scores, "ig_positions", site, params,
                            {"target": str(target), "uid": query.uid, "n_answer": 1})
    answer = query.answer_tokens
    n = len(answer)
    total = positions_batched(lm, query, target, steps, layers, site, batch_size) if path == "fast" else None
    if total is None:
        one = "reference" if path == "reference" else "fast"
        tokens = torch.cat([query.prompt, answer[:-1]])  # z_m = tokens[: position + m + 1]
        cache = prefix_cache(lm, tokens[:-1]) if one == "fast" else None
        if cache is not None and any(getattr(layer, "is_sliding", False) for layer in cache.layers):
            cache = None  # a sliding-window cache cannot be cut back to each position's prefix
        for m in range(n):
            sub = Query(tokens[: query.position + m + 1], (answer[m: m + 1],), 0, "cloze", uid=query.uid)
            s = integrated_gradients(lm, sub, target, steps, "linspace", layers, site, one, batch_size, cache=cache)
            total = s if total is None else total + s
    scores = total / n * steps / (steps - 1)
    params = dict(steps=steps, rule="linspace", layers=layers, path=path)
    return NeuronScores(scores, "ig_positions", site, params, {"target": str(target), "uid": query.uid, "n_answer": n})
