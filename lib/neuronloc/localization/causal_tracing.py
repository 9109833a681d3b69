"""Causal tracing (ROME, Meng et al. 2022 §2.1; a CNL baseline, CNL §3).

Three runs of the fact's prompt:
  clean      the model as is: P(answer) = p_clean.
  corrupted  Gaussian noise added to the subject tokens' embeddings (site `embed`, op
             `noise`, std = `noise` x the std of the embedding matrix, 3 in the CNL paper
             and ROME), `draws` independent draws (draw d seeded with seed + d; ROME: 10),
             P(answer) averaged over the draws (ROME averages the corrupted runs'
             probabilities): p_corrupted.
  restored   corrupted, but one site at one (layer, token) set back to its clean value in
             every draw: p_restored[layer, token], the mean over the draws. Indirect effect
             IE = p_restored - p_corrupted.

Sites restored ("kinds"): "resid.pre" (the hidden state entering layer l; ROME's
hidden state after layer l is resid.pre of l + 1), "mlp.out" and "attn.out" (what the
block adds to the residual stream). `window` restores a run of that many layers
centred on l as ROME does, layers l - window // 2 .. l - window // 2 + window - 1 clipped to
the model (ROME uses 10 for mlp/attn; default 1 = the layer alone).

Cost per fact: 1 clean forward + 1 forward of `draws` rows + per kind one batched
forward per layer of draws x n_tokens rows (per draw, one row restored at each token;
`tokens` restricts the restored tokens, e.g. to the subject's last one); the first
layer's forward also carries each draw's unrestored row, checked against the corrupted run.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
from dataclasses import dataclass, field

import torch

from .. import hooks
from ..engine import broadcast_masks, logits_from, resid_pre, restart_plan, restart_rows, tile_cache
from ..hooks import Edit, capture, intervene, neuron_hooks
from ..models import LM
from .facts import Fact, last_probs, make_fact

KINDS = ("resid.pre", "mlp.out", "attn.out")


@dataclass
class Trace:
    """Causal-tracing result of one fact.

    restored[kind]: `[layer, token]` P(answer) corrupted with that site restored.
    clean, corrupted: P(answer) of the clean and the corrupted run.
    """

    fact: Fact
    restored: dict[str, torch.Tensor]
    clean: float
    corrupted: float
    params: dict = field(default_factory=dict)

    def effect(self, kind: str = "resid.pre") -> torch.Tensor:
        """Indirect effect `[layer, token]`: p_restored - p_corrupted."""
        return self.restored[kind] - self.corrupted

    def top_layers(self, k: int = 3, kind: str = "resid.pre", token: int | str = "max") -> list[int]:
        """The k layers of largest indirect effect, best first: at one token (an index, or
        "subject_last"), or the max over tokens ("max"). CNL §3 localizes the top 3."""
        grid = self.effect(kind)
        if token == "max":
            per_layer = grid.max(dim=1).values
        else:
            per_layer = grid[:, self.fact.subject_last if token == "subject_last" else int(token)]
        return torch.argsort(per_layer, descending=True, stable=True)[:k].tolist()


def corruption(lm: LM, fact: Fact, noise: float = 3.0, seed: int = 0) -> Edit:
    """The subject-embedding corruption: N(0, (noise x std of the embedding matrix)^2)."""
    std = float(lm.model.get_input_embeddings().weight.float().std())
    return Edit(0, None, "noise", noise * std, positions=list(fact.subject), seed=seed)


def _cache_kw(model) -> str:
    """The forward's name of the key/value cache argument (transformers 5: cache; 4: past_key_values)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def _prefix_cache(lm: LM, ids: torch.Tensor, edits: list[Edit], draws: int):
    """The key/value cache of `draws` rows of the prompt prefix `ids` run with the embedding `edits`."""
    with intervene(lm.model, lm.site("embed"), edits):
        out = lm.model(input_ids=ids[None].expand(draws, -1).to(lm.device), use_cache=True, **logits_from(lm.model, 1))
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def _target_probs(lm: LM, ids: torch.Tensor, rows: int, target: int, cache=None) -> torch.Tensor:
    """P(target) at the last position of `rows` copies of `ids` (run inside the caller's hooks),
    after a copy of `cache` (the prefix's keys and values, `rows` rows) when given: `[rows]`."""
    kw = {} if cache is None else {_cache_kw(lm.model): copy.deepcopy(cache), "use_cache": True}
    logits = lm.model(input_ids=ids[None].expand(rows, -1).to(lm.device), **kw, **logits_from(lm.model, 1)).logits[:, -1]
    return logits.double().softmax(-1)[:, target]


@torch.no_grad()
def _restarted_chunk(lm: LM, site, ids: torch.Tensor, target: int, chunk, toks, start: int, window: int, draws: int,
                     inputs: dict, base, clean: dict, noise: list, grid: torch.Tensor, corrupted=None) -> None:
    """One forward of the restorations of `chunk`'s layers (each over its window) at each token
    of `toks`, every restoration entering the batch at its window's first layer (`restart_rows`;
    conditions ordered by that layer, `draws` rows each, condition-major); `noise` corrupts the
    driver rows, `base` (each draw's prefix cache) is tiled to every layer's rows. Writes the
    means over the draws into `grid[layer, token]`. corrupted (per draw): add one unrestored
    condition and check it against these probabilities."""
    first = lambda layer: max(0, layer - window // 2)  # noqa: E731
    order = sorted(chunk, key=first)  # restart needs the conditions sorted by their entry layer
    off = int(corrupted is not None)
    starts = [first(order[0])] * off + [first(layer) for layer in order for _ in toks]
    sizes, restart = restart_plan(starts, draws, site.n_layers, inputs)
    edits = [Edit(l, None, "patch", clean[l][:1, t:t + 1], rows=[(off + j * len(toks) + r) * draws + d for d in range(draws)],
                  positions=[t - start])
             for j, layer in enumerate(order)
             for l in range(first(layer), min(site.n_layers, layer - window // 2 + window))
             for r, t in enumerate(toks)]
    cache = tile_cache(base, sizes, lm.model.config)
    with broadcast_masks(), restart_rows(lm.model, restart), intervene(lm.model, lm.site("embed"), noise), \
            intervene(lm.model, site, edits):
        probs = _target_probs(lm, ids, draws, target, cache).reshape(len(starts), draws)
    if corrupted is not None and ((probs[0] - corrupted).abs() > 1e-3 * corrupted + 1e-6).any():
        raise RuntimeError("the unrestored rows of a restarted trace differ from the corrupted run: "
                           "the model's rows are not independent (padding or batch-dependent layers?)")
    mean = probs[off:].reshape(len(order), len(toks), draws).mean(-1)
    grid[torch.tensor(order)[:, None], torch.tensor(toks)[None, :]] = mean.cpu().to(grid.dtype)


def causal_trace(lm: LM, fact, kinds=KINDS, noise: float = 3.0, seed: int = 0, window: int = 1,
                 layers=None, tokens=None, subject=None, answer=None, draws: int = 1, prefix: bool = True,
                 max_rows: int = 320, restart: bool = True) -> Trace:
    """Trace one fact (a Fact, or what `make_fact` takes with subject= and answer=).

    Returns restored probabilities `[layer, token]` per kind (NaN for layers and tokens not
    traced), each the mean over `draws` noise draws (draw d: `corruption(..., seed + d)`, so
    a trace of draws=n equals the mean of n traces of draws=1 with seeds seed..seed + n - 1).
    tokens: the token positions restored (ints or "subject_last"; None = all). Restorations
    are batched: each forward holds several layers' restorations, draws x len(tokens) rows
    per layer, up to `max_rows` rows (the first forward adds each draw's unrestored row, a
    check against the corrupted run that the batch rows are independent).
    prefix: the positions before the first restored token are the same in every restored run
    of a draw (a restoration at token t changes positions >= t only), so they are run once per
    draw and their keys and values reused (the same numbers up to rounding; cost ~ the
    positions from the first restored token on); False runs every row over the whole prompt.
    restart: a row restored over layers lo..hi equals its draw's corrupted run below lo, so
    it enters the batch at lo's input (taken from one corrupted run per draw; the engine's
    `restart_rows`, as IG's fast path does) instead of re-running layers 0..lo - 1: with a
    10-layer window about a third of the layer passes, with window 1 about half (the same
    numbers up to rounding); False runs every row from the first layer.
    """
    if draws < 1 or window < 1:
        raise ValueError(f"causal tracing needs draws >= 1 and window >= 1, got draws={draws}, window={window}")
    fact = make_fact(lm, fact, subject, answer)
    ids, n_tok, target = fact.prompt, len(fact.prompt), fact.target
    embed = lm.site("embed")
    toks = list(range(n_tok)) if tokens is None else \
        [fact.subject_last if t == "subject_last" else int(t) for t in tokens]
    exact = torch.finfo(lm.dtype).bits >= 32  # half precision: batched and single runs round differently
    start = min(toks) if prefix else 0  # the shared prefix: positions [0, start)
    first = corruption(lm, fact, noise, seed)
    # the corruption as explicit per-draw values (the noise of `corruption(seed + d)`), split at `start`
    scale = torch.as_tensor(first.value, dtype=lm.dtype)
    subj = list(fact.subject)
    eps = [scale * hooks._noise(seed + d, len(subj), embed.n_inner).to(lm.dtype) for d in range(draws)]
    pre = [i for i, q in enumerate(subj) if q < start]
    post = [i for i, q in enumerate(subj) if q >= start]

    def corrupt(rows_of, part, offset=0):  # per draw, the noise of the subject positions in `part`, on that draw's rows
        return [Edit(0, None, "add", eps[d][part][None], rows=rows_of(d), positions=[subj[i] - offset for i in part])
                for d in range(draws) if part]
    p_clean = float(last_probs(lm, ids)[0, target])
    with intervene(lm.model, embed, [dataclasses.replace(first, seed=seed + d, rows=[d]) for d in range(draws)]):
        each_corrupted = last_probs(lm, ids, rows=draws)[:, target]
    p_corrupted = float(each_corrupted.mean())
    base = _prefix_cache(lm, ids[:start], corrupt(lambda d: [d], pre), draws) if start else None
    caches = {}

    def cache_for(block):  # the prefix cache with each draw's row repeated `block` times (draw-major)
        if base is not None and block not in caches:
            caches[block] = copy.deepcopy(base)
            caches[block].batch_repeat_interleave(block)
        return caches.get(block)
    restored = {}
    inputs = None
    if restart and kinds:  # each draw's corrupted run from `start` on: the input of every decoder layer
        seen, pre_site = {}, resid_pre(lm.model)
        record = {l: (lambda h, l=l: seen.__setitem__(l, h.detach())) for l in range(pre_site.n_layers)}
        with intervene(lm.model, embed, corrupt(lambda d: [d], post, start)), neuron_hooks(lm.model, pre_site, record):
            _target_probs(lm, ids[start:], draws, target, base)
        inputs = seen
    for kind in kinds:
        site = lm.site(kind)
        with torch.no_grad(), capture(lm.model, site, positions="all") as clean:
            last_probs(lm, ids)
        todo = list(range(site.n_layers) if layers is None else layers)
        per = max(1, max_rows // (draws * len(toks)))  # layers per forward
        grid = torch.full((site.n_layers, n_tok), float("nan"))
        for c in range(0, len(todo), per):
            chunk = todo[c:c + per]
            if inputs is not None:
                _restarted_chunk(lm, site, ids[start:], target, chunk, toks, start, window, draws, inputs, base, clean.acts,
                                 corrupt(lambda d: [d], post, start), grid, each_corrupted if c == 0 and exact else None)
                continue
            # draw d's rows: d x block + [its unrestored row (first forward only)] + j x len(toks) + r, restored at
            # token toks[r] over the window of layer chunk[j]
            off = int(c == 0)
            block = off + len(chunk) * len(toks)
            edits = [Edit(l, None, "patch", clean.acts[l][:1, t:t + 1],
                          rows=[d * block + off + j * len(toks) + r for d in range(draws)], positions=[t - start])
                     for j, layer in enumerate(chunk)
                     for l in range(max(0, layer - window // 2), min(site.n_layers, layer - window // 2 + window))
                     for r, t in enumerate(toks)]
            with intervene(lm.model, embed, corrupt(lambda d: list(range(d * block, (d + 1) * block)), post, start)), \
                    intervene(lm.model, site, edits):
                probs = _target_probs(lm, ids[start:], draws * block, target, cache_for(block)).reshape(draws, block)
            if off and exact and ((probs[:, 0] - each_corrupted).abs() > 1e-3 * each_corrupted + 1e-6).any():
                raise RuntimeError("the corrupted row of a batched trace differs from the corrupted run: "
                                   "the model's rows are not independent (padding or batch-dependent layers?)")
            mean = probs[:, off:].reshape(draws, len(chunk), len(toks)).mean(0)
            grid[torch.tensor(chunk)[:, None], torch.tensor(toks)[None, :]] = mean.cpu().to(grid.dtype)
        restored[kind] = grid
    params = dict(kinds=list(kinds), noise=noise, seed=seed, window=window, tokens=toks, draws=draws)
    return Trace(fact, restored, p_clean, p_corrupted, params)
