"""One hook mechanism for reading and editing the units of any site (cf. ROME's nethook).

`neuron_hooks` registers, for chosen layers, a function that sees the site's tensor
`[batch, pos, n_inner]` and may return a replacement. `capture` (read, optionally with
gradients) and `intervene` (the `Edit` ops: set / scale / add / add_sign / patch /
noise) are both built on it. Hooks are always removed on exit, also when the body raises.

Positions: "last" (the final position of every row: batches must be left-padded, as
`neuronloc.models.encode` does), "all", or a list of ints. An `Edit` may carry its own
positions and rows, so one batched forward can, e.g., restore a different token in
each row (causal tracing).
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from .sites import Site

OPS = ("set", "scale", "add", "add_sign", "patch", "noise")


def _index(positions, seq_len: int) -> list[int] | slice:
    """Sequence indices selected by `positions` (ascending for "last"/"all")."""
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


def _hook(site: Site, fn: Callable[[torch.Tensor], torch.Tensor | None]):
    """A torch hook that hands `fn` the site's units and puts back what it returns."""

    def edit(t: torch.Tensor) -> torch.Tensor | None:
        if site.start == 0 and site.stop is None:
            return fn(t)
        new = fn(t[..., site.start:site.stop])
        return None if new is None else torch.cat([t[..., :site.start], new, t[..., site.stop:]], dim=-1)

    if site.kind == "input":
        def pre_hook(module, args, kwargs):
            if args:
                new = edit(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            if "hidden_states" not in kwargs:  # decoder layers get it positionally or by name
                raise RuntimeError(f"{type(module).__name__} got no positional input nor hidden_states=: "
                                   f"site {site.name!r} cannot read it")
            new = edit(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        return pre_hook

    def fwd_hook(module, args, output):
        if not isinstance(output, tuple):
            return edit(output)
        new = edit(output[0])  # attention blocks return (output, weights, ...): pass the rest on
        return None if new is None else (new, *output[1:])
    return fwd_hook


@contextmanager
def neuron_hooks(model: nn.Module, site: Site, fns: dict[int, Callable[[torch.Tensor], torch.Tensor | None]]):
    """Call fns[layer](units) on each forward; a returned tensor replaces the units.

    units: `[batch, pos, n_inner]` (the site's slice of the module input/output). The
    replacement keeps the last dim; on resid.pre (the layer input) it may have another
    batch size (ig appends rows at a layer: the layers above then run on the new batch).
    """
    handles = []
    try:
        for layer, fn in fns.items():
            module = site.module(model, layer)
            if site.kind == "input":
                handles.append(module.register_forward_pre_hook(_hook(site, fn), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_hook(site, fn)))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class Capture:
    """Activations (and gradient probes) recorded by `capture`.

    acts[layer]: `[batch, n_pos, n_inner]` detached activations of the last forward.
    grad(layer): dF/d(activation) `[batch, n_pos, n_inner]` after F.backward()
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
    """Record the units at `positions` for `layers` (default: all).

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

    with torch.enable_grad() if grad else nullcontext():
        with neuron_hooks(model, site, {l: make(l) for l in layers}):
            yield cap


@dataclass(frozen=True)
class Edit:
    """Change units of one layer of a site.

    op, with a the unit's value and v the edit's value:
      set       a = v                    scale     a = v * a
      add       a = a + v                add_sign  a = a + v * sign(a)   (the NEG shift)
      patch     a = v, v recorded from another run `[rows or 1, n_pos, k]` (activation
                patching; e.g. `cap.acts[layer][:, :, neurons]` of a clean run)
      noise     a = a + v * eps, eps ~ N(0, 1) `[n_pos, k]` drawn from `seed`, the same for
                every row (causal tracing's corruption; same seed and shape, same noise)
    value: a scalar, one per unit `[k]`, one per (row, unit) `[len(rows), k]`, or one per
    (row, position, unit) `[len(rows) or 1, n_pos, k]`. neurons: unit indices `[k]`, or
    None for every unit (patch a whole hidden state). rows: the batch rows it applies to
    (None = all). positions: its own positions ("last", "all", list of ints), None = those
    of the `intervene` block. Several edits of one unit compose in order; sign() is of the
    unedited value.
    """

    layer: int
    neurons: Sequence[int] | torch.Tensor | None
    op: str
    value: float | torch.Tensor = 0.0
    rows: Sequence[int] | None = None
    positions: str | Sequence[int] | None = None
    seed: int = 0

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; use one of {', '.join(OPS)}")
        # a plain number is checked without torch: sweeps make thousands of edits
        v = self.value if isinstance(self.value, (int, float)) else torch.as_tensor(self.value).detach()
        finite = math.isfinite(v) if isinstance(v, (int, float)) else bool(torch.isfinite(v).all())
        if not finite:
            raise ValueError(f"edit of layer {self.layer} ({self.op}): the value holds NaN or inf; "
                             "pass finite values (a NaN in recorded activations means the source run failed)")
        ndim = 0 if isinstance(v, (int, float)) else v.ndim
        if ndim > 3:
            raise ValueError(f"edit value of shape {tuple(v.shape)}: use a scalar, [k], [rows, k] or [rows, n_pos, k]")
        if self.op == "patch" and ndim != 3:
            raise ValueError("patch takes recorded values [rows, n_pos, k] (e.g. cap.acts[layer][:, :, neurons]); "
                             "for a constant use op='set'")
        if self.op == "noise" and (ndim or float(v) < 0):
            raise ValueError(f"noise takes one standard deviation >= 0, got value {self.value!r}")
        if isinstance(self.positions, str) and self.positions not in ("last", "all"):
            raise ValueError(f"positions must be 'last', 'all' or a list of ints, got {self.positions!r}")


def _noise(seed: int, n_pos: int, k: int) -> torch.Tensor:
    """eps `[n_pos, k]`, drawn on the CPU so it is the same on every device."""
    return torch.randn(n_pos, k, generator=torch.Generator().manual_seed(seed))


def _plan(edits: list[Edit], positions, batch: int, seq: int, n: int, device, dtype):
    """Compose `edits` into one map on the selected positions `index`:
    edited = scale * a + add + sign_add * sign(a) at t[:, index], coefficients `[batch, P, n]`.

    P = 1 (broadcast over positions) when every edit selects the same positions with
    values that do not depend on the position; else P = the union of their positions.
    """
    spans = [_index(positions if e.positions is None else e.positions, seq) for e in edits]
    spans = [list(range(seq)) if isinstance(s, slice) else s for s in spans]
    per_position = any(e.op in ("patch", "noise") or (torch.is_tensor(e.value) and e.value.ndim == 3) for e in edits)
    if not per_position and all(s == spans[0] for s in spans):
        index = slice(None) if spans[0] == list(range(seq)) else spans[0]
        columns, n_pos = [[0]] * len(edits), 1
    else:
        union = sorted(set().union(*spans))
        index = slice(None) if union == list(range(seq)) else union
        column = {p: c for c, p in enumerate(union)}
        columns, n_pos = [[column[p] for p in s] for s in spans], len(union)
    shape = (batch, n_pos, n)
    scale = torch.ones(shape, device=device, dtype=dtype)
    add = torch.zeros(shape, device=device, dtype=dtype)
    sign_add = torch.zeros(shape, device=device, dtype=dtype)
    for e, cols in zip(edits, columns):
        neurons = torch.arange(n, device=device) if e.neurons is None else \
            torch.as_tensor(e.neurons, dtype=torch.long, device=device).reshape(-1)
        if neurons.numel() and (neurons.min() < 0 or neurons.max() >= n):
            raise IndexError(f"layer {e.layer}: neuron index out of range [0, {n})")
        rows = torch.arange(batch, device=device) if e.rows is None else torch.as_tensor(e.rows, dtype=torch.long, device=device)
        if rows.numel() and (rows.min() < 0 or rows.max() >= batch):
            raise IndexError(f"edit rows {list(rows.tolist())} out of range for batch size {batch}")
        v = _value(e, len(rows), len(cols), len(neurons), device, dtype)
        r, p, c = rows[:, None, None], torch.tensor(cols, device=device)[None, :, None], neurons[None, None, :]
        if e.op in ("set", "patch"):
            scale[r, p, c], add[r, p, c], sign_add[r, p, c] = 0.0, v, 0.0
        elif e.op == "scale":
            scale[r, p, c] *= v
            add[r, p, c] *= v
            sign_add[r, p, c] *= v
        elif e.op in ("add", "noise"):
            add[r, p, c] += v
        else:
            sign_add[r, p, c] += v
    return index, scale, add, sign_add


def _value(e: Edit, rows: int, n_pos: int, k: int, device, dtype) -> torch.Tensor:
    """The edit's value broadcast to `[rows, n_pos, k]`."""
    v = torch.as_tensor(e.value, dtype=dtype, device=device)
    given = tuple(v.shape)
    if e.op == "noise":
        v = v * _noise(e.seed, n_pos, k).to(device, dtype)[None]
    elif v.ndim == 1:
        v = v[None, None, :]  # per unit
    elif v.ndim == 2:
        v = v[:, None, :]  # per (row, unit)
    try:
        return v.expand(rows, n_pos, k)
    except RuntimeError:
        raise ValueError(f"edit value of shape {given} does not fit {rows} rows x {n_pos} positions x "
                         f"{k} neurons of layer {e.layer}") from None


@contextmanager
def intervene(model: nn.Module, site: Site, edits: Iterable[Edit], positions="last"):
    """Apply `edits` to the units at `positions` (or each edit's own) on every forward inside the block."""
    by_layer: dict[int, list[Edit]] = {}
    for e in edits:
        by_layer.setdefault(e.layer, []).append(e)

    def make(layer_edits):
        cache = {}
        # a learnable value (requires grad) must be read on every forward: a cached
        # coefficient would hold a freed graph and miss optimizer updates
        learnable = any(torch.is_tensor(e.value) and e.value.requires_grad for e in layer_edits)

        def fn(t):
            key = (t.shape[0], t.shape[1], t.device, t.dtype)
            if learnable or cache.get("key") != key:  # one entry: sequence lengths vary across batches
                cache["key"], cache["plan"] = key, _plan(layer_edits, positions, *t.shape, t.device, t.dtype)
            index, scale, add, sign_add = cache["plan"]
            sel = t[:, index]
            return _replace_at(t, index, scale * sel + add + sign_add * torch.sign(sel))
        return fn

    with neuron_hooks(model, site, {l: make(es) for l, es in by_layer.items()}):
        yield


def silence(layer_neurons: dict[int, Sequence[int]]) -> list[Edit]:
    """Edits that set the given neurons to 0 (NeuronLLM §3.5)."""
    return [Edit(l, ns, "set", 0.0) for l, ns in layer_neurons.items() if len(ns)]


def excite(layer_neurons: dict[int, Sequence[int]], factor: float = 2.0) -> list[Edit]:
    """Edits that multiply the given neurons by `factor` (NeuronLLM §3.5: 2x)."""
    return [Edit(l, ns, "scale", factor) for l, ns in layer_neurons.items() if len(ns)]


@dataclass
class Passes:
    """Forward and backward passes through a model counted by `count_passes` (a batched
    pass of many rows counts once), and the rows they carried."""

    forward: int = 0
    backward: int = 0
    rows: int = 0


@contextmanager
def count_passes(model: nn.Module):
    """Inside the block, count the model's forward and backward passes: hooks on the final
    norm (`sites.final_norm`), which every pass that reaches the head crosses once."""
    from .sites import final_norm

    norm, n = final_norm(model), Passes()

    def fwd(module, args, out):
        n.forward += 1
        n.rows += args[0].shape[0]

    def bwd(module, grad_out):
        n.backward += 1

    handles = [norm.register_forward_hook(fwd), norm.register_full_backward_pre_hook(bwd)]
    try:
        yield n
    finally:
        for h in handles:
            h.remove()
