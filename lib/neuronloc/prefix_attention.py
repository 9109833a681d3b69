"""Attention over a shared, cached prompt prefix without copying it per row.

The fast attribution paths re-run a few answer positions for many batch rows
(one per (layer, alpha) or per target) after one prompt prefix. Plain KV caching
concatenates the prefix keys/values into every row (rows x layers x prefix x dim
copies, and as many zero-filled gradients). Here each row attends to the prefix
keys/values of batch 1 by broadcasting, and to its own new positions causally; the
two score blocks share one softmax, so the result is exactly attention over the
concatenation.

Used through `shared_prefix(lm, cache)`, which swaps the model's attention
implementation for the duration of a forward. Families whose attention has
extras (logit soft-capping, sliding windows: Gemma 2/3) keep the plain path.

Independent positions (`offset=`): the new positions of a row are independent queries
at absolute positions offset, offset + 1, ...: position s attends to the prefix keys
before offset + s (within the sliding window, if any) and to itself only, as if each
were the last token of its own row after its own prefix. CNL's per-position IG then
runs every answer position of a teacher-forced answer in one row (`ig_positions`).

A tree of new positions (`mask=`): every new position sees the whole prefix and the new
positions the mask allows; `engine.Layout(tree=True)` puts the answer position and all
options' tokens in one row this way, each option seeing the answer position and itself.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers.cache_utils import DynamicLayer

from .sites import family_of

NAME = "neuronloc_shared_prefix"
_PREFIX: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
_OFFSET: dict = {}  # "offset": absolute position of the first new position (independent mode); "mask": a tree


def _attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """query `[B, heads, s, d]`, key/value `[B, kv_heads, s, d]` (new positions only);
    the prefix keys/values `[1, kv_heads, P, d]` come from the cache. Returns `[B, s, heads, d]`."""
    prefix_k, prefix_v = _PREFIX[module.layer_idx]
    b, heads, s, d = query.shape
    kv_heads = key.shape[1]
    q = query.reshape(b, kv_heads, heads // kv_heads, s, d)
    old = torch.einsum("bkgsd,kpd->bkgsp", q, prefix_k[0].to(q.dtype)) * scaling
    new = torch.einsum("bkgsd,bktd->bkgst", q, key) * scaling
    if "mask" in _OFFSET:  # a tree of new positions (engine.Layout): the whole prefix, then the mask
        causal = _OFFSET["mask"].to(q.device)
    elif "offset" in _OFFSET:  # independent positions: the prefix before each one's own position, then itself
        at = _OFFSET["offset"] + torch.arange(s, device=q.device)[:, None]
        j = torch.arange(old.shape[-1], device=q.device)[None]
        visible = j < at
        window = kwargs.get("sliding_window")
        if window:
            visible &= at - j < window
        old = old.masked_fill(~visible, float("-inf"))
        causal = torch.eye(s, dtype=torch.bool, device=q.device)
    else:
        causal = torch.ones(s, s, dtype=torch.bool, device=q.device).tril()
    new = new.masked_fill(~causal, float("-inf"))
    weights = torch.softmax(torch.cat([old, new], dim=-1).float(), dim=-1).to(q.dtype)
    out = torch.einsum("bkgsp,kpd->bkgsd", weights[..., : old.shape[-1]], prefix_v[0].to(q.dtype))
    out = out + torch.einsum("bkgst,bktd->bkgsd", weights[..., old.shape[-1]:], value)
    return out.reshape(b, heads, s, d).transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # the attention above builds its own (prefix visible, new positions causal)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, _no_mask)


def supported(lm, context: int) -> bool:
    """Does this model's attention reduce to plain softmax attention over `context` positions?"""
    cfg = lm.model.config
    window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
    return family_of(lm.model).shared_prefix and (not window or context <= window)


class _PrefixLayer(DynamicLayer):
    """A cache layer that reports the prefix length but hands attention only the new positions."""

    def __init__(self, keys, values):
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        return key_states, value_states


@contextmanager
def shared_prefix(lm, cache, offset: int | None = None, mask: torch.Tensor | None = None):
    """Inside the block, forwards attend to `cache`'s prefix (batch 1) from any batch size.

    Yields the cache object to pass to the forward (`engine.with_cache`; None for an empty prefix).
    offset: independent positions (see the module docstring); the caller passes their
    `position_ids` (offset, offset + 1, ...) to the forward.
    mask `[s, s]` (bool): which new positions each new position attends to (besides the
    whole prefix), instead of the causal triangle; the caller passes their `position_ids`.
    """
    if cache is None and offset is not None:
        raise ValueError("independent positions need a cached prefix")
    if cache is None:
        yield None
        return
    from transformers import DynamicCache

    view = DynamicCache()
    view.layers = [_PrefixLayer(layer.keys[:1], layer.values[:1]) for layer in cache.layers]
    config = lm.model.config
    before = config._attn_implementation
    _PREFIX.clear()
    _PREFIX.update({i: (layer.keys[:1], layer.values[:1]) for i, layer in enumerate(cache.layers)})
    _OFFSET.clear()
    if offset is not None:
        _OFFSET["offset"] = offset
    if mask is not None:
        _OFFSET["mask"] = mask
    config._attn_implementation = NAME
    try:
        yield view
    finally:
        config._attn_implementation = before
        _PREFIX.clear()
        _OFFSET.clear()


_register()
