"""Neuron sets in one place: flat ids, (layer, index) pairs, bool masks, layer dicts,
and the one ranking rule.

A neuron is (layer, index) with flat id = layer * n_inner + index. A set of neurons is
  flat ids     1-D LongTensor (or list / array / set) `[n]`
  mask         bool `[layer, neuron]`
  layer dict   {layer: [index, ...]} (the form `hooks.silence` / `hooks.excite` take)
`shape` = (n_layers, n_inner) (`Site.shape`) is needed where a form does not carry it.
Rankings are stable: ties go to the smaller flat id, NaN scores rank last.
"""
from __future__ import annotations

import torch


def flat(layer, index, n_inner: int):
    """Flat id(s) of (layer, index): ints or tensors."""
    return layer * n_inner + index


def unflat(ids, n_inner: int):
    """(layer, index) of flat id(s): a pair of ints for an int (or 0-d tensor), of
    LongTensors for a 1-D tensor."""
    if torch.is_tensor(ids) and ids.ndim:
        return ids // n_inner, ids % n_inner
    return divmod(int(ids), n_inner)


def mask_to_ids(mask: torch.Tensor) -> torch.Tensor:
    """Bool mask `[layer, neuron]` -> ascending flat ids `[n]` (long)."""
    return torch.nonzero(_mask(mask).reshape(-1)).reshape(-1)


def ids_to_mask(ids, shape: tuple[int, int]) -> torch.Tensor:
    """Flat ids (any form `to_ids` takes) -> bool mask of `shape` = (n_layers, n_inner)."""
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
    mask[to_ids(ids, shape)] = True
    return mask.reshape(shape)


def to_ids(neurons, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Flat ids `[n]` (long) of a neuron set in any form.

    Ids keep their order (a ranking stays ranked); a python set, a mask and a layer dict
    give ascending ids. A layer dict needs `shape`; with `shape` every id is range-checked.
    """
    if isinstance(neurons, dict):
        if shape is None:
            raise ValueError("a {layer: [index]} neuron set needs shape=(n_layers, n_inner) to give flat ids")
        if any(not 0 <= i < shape[1] for idx in neurons.values() for i in idx):
            raise IndexError(f"neuron index out of range [0, {shape[1]}) in {neurons}")
        ids = [flat(int(l), int(i), shape[1]) for l in sorted(neurons) for i in sorted(neurons[l])]
        t = torch.tensor(ids, dtype=torch.long)
    elif isinstance(neurons, (set, frozenset)):
        t = torch.tensor(sorted(int(i) for i in neurons), dtype=torch.long)
    else:
        t = torch.as_tensor(neurons if torch.is_tensor(neurons) or hasattr(neurons, "__array__") else list(neurons))
        if t.dtype == torch.bool:
            t = mask_to_ids(t)
        t = t.reshape(-1).long()
    if shape is not None and t.numel() and (t.min() < 0 or t.max() >= shape[0] * shape[1]):
        bad = t[(t < 0) | (t >= shape[0] * shape[1])][0].item()
        raise IndexError(f"flat neuron id {bad} out of range [0, {shape[0] * shape[1]})")
    return t


def to_layer_dict(neurons, shape: tuple[int, int] | None = None) -> dict[int, list[int]]:
    """{layer: [index]} for the non-empty layers, from a layer dict, a bool mask
    `[layer, neuron]` or flat ids (which need `shape`, or at least its n_inner)."""
    if isinstance(neurons, dict):
        return {int(l): [int(i) for i in idx] for l, idx in neurons.items() if len(idx)}
    if torch.is_tensor(neurons) and neurons.dtype == torch.bool:
        return {l: row.nonzero().reshape(-1).tolist() for l, row in enumerate(_mask(neurons)) if row.any()}
    ids = to_ids(neurons, shape)
    if ids.numel() == 0:
        return {}
    if shape is None:
        raise ValueError("flat neuron ids need the site's shape (n_layers, n_inner) to split them into "
                         "(layer, index): pass the site (or site.shape)")
    out: dict[int, list[int]] = {}
    for layer, index in zip(*(t.tolist() for t in unflat(ids, shape[1]))):
        out.setdefault(layer, []).append(index)
    return out


def _mask(mask: torch.Tensor) -> torch.Tensor:
    if mask.dim() != 2:
        raise ValueError(f"a neuron mask must be [layer, neuron], got shape {tuple(mask.shape)}")
    return mask.bool()


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Flat ids of the k highest scores `[layer, neuron]`, best first; ties -> smaller flat id."""
    return torch.argsort(-scores.reshape(-1), stable=True)[:k]  # -NaN is NaN: sorted last


def bottom_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Flat ids of the k lowest (most negative) scores, lowest first; ties -> smaller flat id."""
    return torch.argsort(scores.reshape(-1), stable=True)[:k]


def common(sets, k: int | None = None) -> torch.Tensor:
    """Neurons found in more than one of `sets` (NeuronLLM App. C.1 'common neurons').

    sets: ranked neuron sets (flat ids, best first), e.g. the good set of every task.
    Ranked by the number of sets holding the neuron, then by its mean rank in those sets,
    then by flat id; `k` keeps the first k. Returns flat ids `[n]`.
    """
    ranks: dict[int, list[int]] = {}
    for s in sets:
        for r, i in enumerate(to_ids(s).tolist()):
            ranks.setdefault(i, []).append(r)
    shared = [(-len(r), sum(r) / len(r), i) for i, r in ranks.items() if len(r) > 1]
    return torch.tensor([i for *_, i in sorted(shared)][:k], dtype=torch.long)


def refill(ranked, exclude, k: int) -> torch.Tensor:
    """The first k of `ranked` (flat ids, best first) that are not in `exclude`: a top-k
    set with some neurons removed and refilled from the next ranks (NeuronLLM Fig. 7)."""
    drop = set(to_ids(exclude).tolist())
    ids = to_ids(ranked)
    keep = torch.tensor([i not in drop for i in ids.tolist()], dtype=torch.bool)
    return ids[keep][:k]


def layer_counts(neurons, shape: tuple[int, int]) -> torch.Tensor:
    """Neurons per layer `[n_layers]` (long) of a neuron set in any form (NeuronLLM Fig. 5-7)."""
    ids = to_ids(neurons, shape)
    return torch.bincount(ids // shape[1], minlength=shape[0])
