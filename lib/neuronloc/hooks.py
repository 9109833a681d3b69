"""One hook mechanism for reading and editing FFN neurons (cf. ROME's nethook).

`neuron_hooks` registers, for chosen layers, a function that sees the neuron
tensor `[batch, pos, n_inner]` at the site and may return a replacement.
`capture` (read, optionally with gradients) and `intervene` (set / scale / add /
add-along-sign) are both built on it. Hooks are always removed on exit, also
when the body raises.

Positions: "last" (the final position of every row: batches must be
left-padded, as `neuronloc.models.encode` does), "all", or a list of ints.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from .sites import Site

OPS = ("set", "scale", "add", "add_sign")


def _index(positions, seq_len: int):
    if positions == "last":
        return [seq_len - 1]
    if positions == "all":
        return slice(None)
    if isinstance(positions, str):
        raise ValueError(f"positions must be 'last', 'all' or a list of ints, got {positions!r}")
    idx = [p + seq_len if p < 0 else p for p in positions]
    if any(not 0 <= p < seq_len for p in idx):
        raise IndexError(f"positions {list(positions)} out of range for sequence length {seq_len}")
    return idx


def _replace_at(x: torch.Tensor, idx, new: torch.Tensor) -> torch.Tensor:
    """x with x[:, idx] replaced by `new` (out of place, differentiable)."""
    if isinstance(idx, slice):
        return new
    y = x.clone()
    y[:, idx] = new
    return y


@contextmanager
def neuron_hooks(model: nn.Module, site: Site, fns: dict[int, Callable[[torch.Tensor], torch.Tensor | None]]):
    """Call fns[layer](neurons) on each forward; a returned tensor replaces the neurons.

    neurons: `[batch, pos, n_inner]` (the site's slice of the module input/output).
    """
    handles = []

    def wrap(fn):
        def edit(t: torch.Tensor) -> torch.Tensor | None:
            if site.start == 0 and site.stop is None:
                return fn(t)
            inner = t[..., site.start:site.stop]
            new = fn(inner)
            if new is None:
                return None
            return torch.cat([t[..., : site.start], new, t[..., site.stop:]], dim=-1)

        if site.kind == "input":
            def pre_hook(module, args, kwargs):
                new = edit(args[0])
                if new is None:
                    return None
                return (new, *args[1:]), kwargs
            return pre_hook
        def fwd_hook(module, args, output):
            return edit(output)
        return fwd_hook

    try:
        for layer, fn in fns.items():
            module = site.module(model, layer)
            if site.kind == "input":
                handles.append(module.register_forward_pre_hook(wrap(fn), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(wrap(fn)))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class Capture:
    """Activations (and gradient probes) recorded by `capture`.

    acts[layer]: `[batch, n_pos, n_inner]` detached activations of the last forward.
    grads(layer): dF/d(activation) `[batch, n_pos, n_inner]` after F.backward()
    (only with grad=True).
    """

    acts: dict[int, torch.Tensor] = field(default_factory=dict)
    probes: dict[int, torch.Tensor] = field(default_factory=dict)

    def grad(self, layer: int) -> torch.Tensor:
        probe = self.probes[layer]
        if probe.grad is None:
            raise RuntimeError("no gradient yet: call backward() on a function of the model output first")
        return probe.grad

    def stack(self) -> torch.Tensor:
        """Activations of all captured layers: `[layer, batch, n_pos, n_inner]`."""
        return torch.stack([self.acts[k] for k in sorted(self.acts)])


@contextmanager
def capture(model: nn.Module, site: Site, layers: Iterable[int] | None = None, positions="last", grad: bool = False):
    """Record the neurons at `positions` for `layers` (default: all).

    With grad=True a zero probe is added to the recorded activations, so that
    `cap.grad(layer)` is the gradient of whatever is back-propagated w.r.t. those
    activations, for every layer at once, without cutting the graph between layers
    (works whether or not the model's parameters require grad).
    """
    cap = Capture()
    layers = range(site.n_layers) if layers is None else list(layers)

    def make(layer):
        def fn(t):
            idx = _index(positions, t.shape[1])
            sel = t[:, idx]
            cap.acts[layer] = sel.detach()
            if not grad:
                return None
            probe = torch.zeros_like(sel, requires_grad=True)
            cap.probes[layer] = probe
            return _replace_at(t, idx, sel + probe)
        return fn

    with torch.enable_grad() if grad else _null():
        with neuron_hooks(model, site, {l: make(l) for l in layers}):
            yield cap


@contextmanager
def _null():
    yield


@dataclass(frozen=True)
class Edit:
    """Change neurons of one layer: op in set | scale | add | add_sign.

    set: a = v;  scale: a = v*a;  add: a = a + v;  add_sign: a = a + v*sign(a)
    (the NEG shift). value: a scalar, one value per neuron `[k]`, or one per
    (row, neuron) `[len(rows), k]`. rows: the batch rows it applies to (None = all),
    so one batch can carry a different edit per row.
    Several edits of one neuron compose in order; sign() is of the unedited value.
    """

    layer: int
    neurons: Sequence[int] | torch.Tensor
    op: str
    value: float | torch.Tensor = 0.0
    rows: Sequence[int] | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; use one of {', '.join(OPS)}")


def _coefficients(edits: list[Edit], batch: int, n: int, device, dtype):
    """Dense per-row coefficients (scale, add, sign_add), each `[batch, n]`:
    edited = scale * a + add + sign_add * sign(a)."""
    scale = torch.ones(batch, n, device=device, dtype=dtype)
    add = torch.zeros(batch, n, device=device, dtype=dtype)
    sign_add = torch.zeros(batch, n, device=device, dtype=dtype)
    for e in edits:
        neurons = torch.as_tensor(e.neurons, dtype=torch.long, device=device).reshape(-1)
        if neurons.numel() and (neurons.min() < 0 or neurons.max() >= n):
            raise IndexError(f"layer {e.layer}: neuron index out of range [0, {n})")
        rows = torch.arange(batch, device=device) if e.rows is None else torch.as_tensor(e.rows, dtype=torch.long, device=device)
        if rows.numel() and (rows.min() < 0 or rows.max() >= batch):
            raise IndexError(f"edit rows {list(rows.tolist())} out of range for batch size {batch}")
        v = torch.as_tensor(e.value, dtype=dtype, device=device)
        v = v.expand(len(rows), len(neurons)) if v.ndim < 2 else v
        if v.shape != (len(rows), len(neurons)):
            raise ValueError(f"edit value of shape {tuple(v.shape)} does not fit {len(rows)} rows x {len(neurons)} neurons")
        r, c = rows[:, None], neurons[None, :]
        if e.op == "set":
            scale[r, c], add[r, c], sign_add[r, c] = 0.0, v, 0.0
        elif e.op == "scale":
            scale[r, c] *= v
            add[r, c] *= v
            sign_add[r, c] *= v
        elif e.op == "add":
            add[r, c] += v
        else:
            sign_add[r, c] += v
    return scale, add, sign_add


@contextmanager
def intervene(model: nn.Module, site: Site, edits: Iterable[Edit], positions="last"):
    """Apply `edits` to the neurons at `positions` on every forward inside the block."""
    by_layer: dict[int, list[Edit]] = {}
    for e in edits:
        by_layer.setdefault(e.layer, []).append(e)

    def make(layer_edits):
        cache = {}
        # a learnable value (requires grad) must be read on every forward: a cached
        # coefficient would hold a freed graph and miss optimizer updates
        learnable = any(isinstance(e.value, torch.Tensor) and e.value.requires_grad for e in layer_edits)

        def fn(t):
            key = (t.shape[0], t.device, t.dtype)
            if learnable or key not in cache:
                cache[key] = _coefficients(layer_edits, t.shape[0], t.shape[-1], t.device, t.dtype)
            scale, add, sign_add = (c[:, None, :] for c in cache[key])
            idx = _index(positions, t.shape[1])
            sel = t[:, idx]
            return _replace_at(t, idx, scale * sel + add + sign_add * torch.sign(sel))
        return fn

    with neuron_hooks(model, site, {l: make(es) for l, es in by_layer.items()}):
        yield


def silence(layer_neurons: dict[int, Sequence[int]]) -> list[Edit]:
    """Edits that set the given neurons to 0 (NeuronLLM §3.5)."""
    return [Edit(l, ns, "set", 0.0) for l, ns in layer_neurons.items() if len(ns)]


def excite(layer_neurons: dict[int, Sequence[int]], factor: float = 2.0) -> list[Edit]:
    """Edits that multiply the given neurons by `factor` (NeuronLLM §3.5: 2x)."""
    return [Edit(l, ns, "scale", factor) for l, ns in layer_neurons.items() if len(ns)]
