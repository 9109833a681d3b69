"""Ground-truth neuron empirical gradients (NEG §2-§4): measured output shifts.

Shift `a ← a + Δ·sign(a)` at the answer position (`hooks.Edit` op "add_sign"; sign of
the unedited value, so a neuron at exactly 0 does not move) and read the change of the
answer's vocabulary probability through the engine's read-out (`targets.answer_prob`:
the label token, a single-token cloze fact, or a multi-token answer text teacher forced).

A *condition* shifts k neurons at once by their own Δ_i (k = 1 for a sweep). Editing only
the answer position leaves every earlier position unchanged, so the prompt prefix runs
once into a KV cache and only the answer position (and the answer's continuation) is
re-run, one batch row per condition (`engine.Layout`); the layers below a condition's
lowest edit are unchanged too, so its rows enter the batch there, restarted from that
layer's unedited input (as IG's fast path). path="reference" re-runs the full prompt
per condition instead (the tests and the bench check they agree).

  output_shifts   one shift per condition, `[condition]`
  sweep           Δ grid x sampled neurons, `[neuron, Δ]` (NEG Fig. 2, Tables 1, 2, 5)
  polarity_shift  k neurons shifted together by step·sign(NEG_i) (NEG §3.3 Fig. 3, §4.2 Fig. 5)
  polarity_shifts several of them in one batched call
  answered        is a prompt's single-token answer the model's top token (NEG §2.1 prompt filter)
  study           all of the above and the estimators (NeurGrad, CG, IG, LPI) on one prompt -> `Study`
                  (notebook 04; its parameters: `configs.StudyConfig`)

The metrics (`neg_slope`, `pearson_r`, `linear_ratio`, `r_by_range`, `linearity_table`, ...)
live in `neuronloc.metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from .configs import StudyConfig
from .engine import (Layout, Query, forward_rows, layer_inputs, make_query, option_logits_suffice, prefix_cache,
                     restart_plan, restart_rows, rows_layout)
from .hooks import Edit, intervene
from .metrics import pearson_r
from .models import LM
from .neurons import to_ids, unflat
from .targets import answer_logprob, answer_prob, get_target

PATHS = ("fast", "reference")
DELTAS = torch.arange(-50, 51, dtype=torch.float64) / 5  # NEG §2.1: Δ in [-10, 10], step 0.2


def _answer_only(query: Query) -> Query:
    """The query reduced to its answer's continuation: for targets that read the answer's
    score alone, the other options' rows (multi-token read-outs) are not run."""
    a = query.answer
    return replace(query, continuations=(query.continuations[a],), answer=0,
                   lengths=None if query.lengths is None else query.lengths[a:a + 1],
                   priors=None if query.priors is None else query.priors[a:a + 1])


def _edits(layout: Layout, site, neurons: torch.Tensor, deltas: torch.Tensor, starts=None) -> list[Edit]:
    """One add_sign Edit per layer for a chunk of conditions: value `[rows, k_layer]` holds
    each row's Δ for the layer's neurons touched in the chunk (0 elsewhere: a + 0·sign(a) = a).

    neurons, deltas: `[conditions, k]` flat ids and their Δ. starts `[conditions]`
    (restarted rows, ascending): the layer where each condition's rows enter the batch;
    an edit of layer l covers the conditions already there."""
    layer, index = unflat(neurons.reshape(-1), site.n_inner)
    rows = torch.arange(len(neurons)).repeat_interleave(neurons.shape[1])  # the condition of each entry
    out = []
    for l in layer.unique().tolist():
        hit = layer == l
        units, column = index[hit].unique(return_inverse=True)
        value = torch.zeros(len(neurons), len(units), dtype=torch.float64)
        value.index_put_((rows[hit], column), deltas.reshape(-1)[hit], accumulate=True)
        present = len(neurons) if starts is None else int((starts <= l).sum())
        value = value[:present].repeat_interleave(layout.per_condition, dim=0)  # every row of a condition
        out.append(Edit(l, units.tolist(), "add_sign", value.float(), rows=list(range(len(value)))))
    return out


@torch.no_grad()
def output_shifts(lm: LM, question, neurons, deltas, target: str = "answer_prob", site: str = "ffn.mid",
                  path: str = "fast", rows: int = 128, chat: bool = False, readout: str | None = None,
                  progress: bool = False) -> torch.Tensor:
    """F(edited) - F(unedited) for each condition: `[conditions]` float64.

    question: an MCQuestion, a free-form example (prompt, answer) or a Query.
    neurons: flat ids `[k]` (every condition shifts the same neurons) or `[conditions, k]`.
    deltas: `[conditions, k]` (or `[conditions]` for k = 1): condition c adds
      deltas[c, i]·sign(a) to neuron neurons[c, i], all k at once.
    target: F (`neuronloc.targets`), default the answer's vocabulary probability (NEG).
    path: "fast" (prefix KV cache, only the answer position re-run, rows restarted at
      their lowest edited layer) or "reference" (the full prompt per row, every layer).
    rows: batch rows per forward (rows=1 with path="reference" is one full-prompt
      forward per condition, the naive protocol).
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
    site_ = lm.site(site)
    target_fn = get_target(target)
    deltas = torch.as_tensor(deltas, dtype=torch.float64)
    deltas = deltas[:, None] if deltas.ndim == 1 else deltas
    if torch.is_tensor(neurons) and neurons.ndim == 2:
        neurons = neurons.long()
    else:
        neurons = to_ids(neurons).expand(len(deltas), -1)
    if neurons.shape != deltas.shape:
        raise ValueError(f"neurons {tuple(neurons.shape)} and deltas {tuple(deltas.shape)} do not pair up: "
                         "pass neurons [k] or [conditions, k] and deltas [conditions, k]")
    to_ids(neurons.reshape(-1), site_.shape)  # range check
    query = make_query(lm, question, chat=chat, readout=readout)
    if target_fn in (answer_prob, answer_logprob):
        query = _answer_only(query)
    full = path == "reference"
    cache = None if full else prefix_cache(lm, query.prefix)
    option_logits = option_logits_suffice(query, target_fn)
    answer = torch.tensor([query.answer])
    per = (Layout(query, 1, full=True) if full else rows_layout(lm, query, 1, cache)).per_condition
    # fast path: a condition's rows enter the batch at its lowest edited layer, restarted
    # from that layer's unedited input, so the layers below its edits are not re-run
    starts = neurons.min(1).values // site_.n_inner
    order = torch.argsort(starts, stable=True) if not full else torch.arange(len(deltas))
    inputs = None if full else layer_inputs(lm, rows_layout(lm, query, 1, cache), cache)

    def run(chunk=None):
        n = 1 if chunk is None else len(chunk)
        layout = Layout(query, n, full=True) if full else rows_layout(lm, query, n, cache)
        edits, n_input, sizes, restart = [], None, None, {}
        if chunk is not None:
            start = None if full else starts[chunk]
            edits = _edits(layout, site_, neurons[chunk], deltas[chunk], start)
            if not full:
                n_input = 1  # one driver condition below the first restart
                sizes, restart = restart_plan(start.tolist(), per, site_.n_layers, inputs)
        with intervene(lm.model, site_, edits, positions=[layout.at]), restart_rows(lm.model, restart):
            scores = forward_rows(lm, layout, cache, option_logits, n_input, sizes)
        return target_fn(scores.double(), answer.expand(n)).cpu()

    base = run()
    step = max(1, rows // per)
    out = torch.cat([run(order[s:s + step])
                     for s in tqdm(range(0, len(deltas), step), desc="NEG shifts", disable=not progress, leave=False)])
    shifts = torch.empty_like(out)
    shifts[order] = out
    return shifts - base


def sweep(lm: LM, question, neurons, deltas=DELTAS, **kwargs) -> torch.Tensor:
    """Ground-truth sweep: output shift of each neuron shifted alone by each Δ, `[neuron, Δ]`.

    neurons: flat ids `[n]`; deltas `[D]` (default NEG's -10..10 step 0.2). Every
    (neuron, Δ) pair is one condition of `output_shifts` (kwargs: target, site, path,
    rows, chat, readout, progress); NEG = `metrics.neg_slope(deltas, sweep(...))`.
    """
    neurons = to_ids(neurons)
    deltas = torch.as_tensor(deltas, dtype=torch.float64).reshape(-1)
    pairs = neurons.repeat_interleave(len(deltas))[:, None]
    shifts = output_shifts(lm, question, pairs, deltas.repeat(len(neurons)), **kwargs)
    return shifts.reshape(len(neurons), len(deltas))


@dataclass
class PolarityShift:
    """k neurons shifted together by step·sign(NEG_i) (NEG §3.3, §4.2).

    steps `[S]`; predicted `[S]` = Σ_i NEG_i Δ_i = step · Σ_i |NEG_i| (first-order,
    additive); actual `[S]`: the measured output shift.
    """

    steps: torch.Tensor
    predicted: torch.Tensor
    actual: torch.Tensor

    @property
    def r(self) -> float:
        """Pearson r of predicted vs actual over the steps (NEG Fig. 5); nan if either is constant."""
        return float(pearson_r(self.predicted, self.actual))


def polarity_shift(lm: LM, question, neurons, negs, steps, **kwargs) -> PolarityShift:
    """Shift `neurons` (flat ids `[k]`) together by Δ_i = step·sign(negs_i) for each step.

    negs `[k]`: the neurons' estimated NEG (e.g. NeurGrad scores at those ids), which sets
    each neuron's polarity (enhance: raise positive neurons, lower negative ones) and the
    additive prediction Σ_i NEG_i Δ_i. steps `[S]`: e.g. 0..0.5 step 0.01 (Fig. 5) or
    0.1..1 (Fig. 3, top-K). All steps run batched (kwargs as `output_shifts`).
    """
    negs = torch.as_tensor(negs, dtype=torch.float64).reshape(-1)
    steps = torch.as_tensor(steps, dtype=torch.float64).reshape(-1)
    deltas = steps[:, None] * torch.sign(negs)[None]  # [S, k]
    actual = output_shifts(lm, question, to_ids(neurons), deltas, **kwargs)
    return PolarityShift(steps, deltas @ negs, actual)


@torch.no_grad()
def answered(lm: LM, question) -> bool:
    """NEG §2.1 keeps prompts the model answers correctly: the answer is one token and it is
    the most probable next token over the whole vocabulary."""
    query = make_query(lm, question)
    if len(query.answer_tokens) != 1:
        return False
    logits = lm.model(input_ids=query.prompt[None].to(lm.device)).logits[0, -1]
    return int(logits.argmax()) == int(query.answer_tokens[0])


def polarity_shifts(lm: LM, question, runs, **kwargs) -> list[PolarityShift]:
    """Several `polarity_shift`s of one prompt in one batched `output_shifts` call (one
    prefix cache): runs = [(neurons `[k]`, negs `[k]`, steps `[S]`), ...], k and S may differ.
    Shorter neuron sets are padded with their own first neuron at Δ = 0 (a + 0·sign(a) = a)."""
    runs = [(to_ids(n), torch.as_tensor(g, dtype=torch.float64).reshape(-1), torch.as_tensor(s, dtype=torch.float64).reshape(-1))
            for n, g, s in runs]
    width = max(len(n) for n, _, _ in runs)
    ids, deltas = [], []
    for neurons, negs, steps in runs:
        d = steps[:, None] * torch.sign(negs)[None]  # [S, k]
        pad = width - len(neurons)
        ids.append(torch.cat([neurons, neurons[:1].expand(pad)]).expand(len(steps), -1))
        deltas.append(torch.cat([d, torch.zeros(len(steps), pad, dtype=torch.float64)], 1))
    actual = output_shifts(lm, question, torch.cat(ids), torch.cat(deltas), **kwargs).split([len(s) for _, _, s in runs])
    return [PolarityShift(steps, steps[:, None] * torch.sign(negs)[None] @ negs, a) for (_, negs, steps), a in zip(runs, actual)]


def grid(limit: float, step: float) -> torch.Tensor:
    """The Δ grid -limit, -limit + step, ..., limit `[D]` float64 (NEG §2.1: limit 10, step 0.2)."""
    n = round(limit / step)
    return torch.arange(-n, n + 1, dtype=torch.float64) * step


@dataclass
class Study:
    """Everything NEG §2-§4 measure on one prompt (`study`; notebook 04), as plain tensors.

    neurgrad, grad (CG), ig, acts `[layer, neuron]`: the estimators at the answer position and
      the activations; lpi `[n]` at `neurons` only (NaN where `lpi_defined` is not: GPT-NeoX, GPT-J);
      seconds {estimator: wall seconds} (NEG Tab. 2; lpi: for the `neurons` alone).
    neurons `[n]` (sampled by the caller) and sweep `[n, D]` on the study's deltas (Fig. 2, Tab. 1, 2).
    top `[top_n]` the largest |NeurGrad| and top_sweep `[top_n, D']` on `top_deltas` (App. A Tab. 5).
    top_k {estimator: `[len(top_k), S]`}: output shift when its top-K neurons by |score| are shifted
      by step·sign(score), for the steps `top_k_steps` (Fig. 3).
    multi {limit: {"sizes", "steps", "predicted" `[sizes, S]`, "actual" `[sizes, S]`}}: N random
      neurons shifted by step·sign(NeurGrad), predicted Σ NeurGrad·Δ (Fig. 5, Fig. 14).
    """

    neurgrad: torch.Tensor
    grad: torch.Tensor
    ig: torch.Tensor
    acts: torch.Tensor
    lpi: torch.Tensor
    seconds: dict
    neurons: torch.Tensor
    sweep: torch.Tensor
    top: torch.Tensor
    top_sweep: torch.Tensor
    top_k: dict
    multi: dict


def study(lm: LM, question, neurons, deltas, config: StudyConfig = StudyConfig(), **overrides) -> Study:
    """Everything NEG §2-§4 measure on one prompt (`Study`): the estimators (NeurGrad, CG, IG with
    `config.ig_steps` points, rule "linspace" as the NEG reference code, LPI at `neurons`), each
    timed; the sweep of `neurons` on `deltas`; the sweep of the top-|NeurGrad| neurons; top-K
    shifts; N random neurons (seeded with `config.seed`, per N) shifted together.

    config: `configs.StudyConfig`; `overrides` replace its fields (`study(..., top_n=64)`).
    """
    import time

    from .attribution import attribute
    from .attribution.gradients import lpi_defined

    cfg = replace(config, **overrides) if overrides else config
    site = lm.site()
    neurons = to_ids(neurons)
    seconds = {}

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        seconds[name] = time.perf_counter() - start
        return result

    scores = {"neurgrad": timed("neurgrad", lambda: attribute("neurgrad", lm, question).scores),
              "grad": timed("grad", lambda: attribute("grad", lm, question).scores),
              "ig": timed("ig", lambda: attribute("ig", lm, question, target="answer_prob", steps=cfg.ig_steps,
                                                  rule="linspace").scores)}
    if lpi_defined(lm):
        lpi = timed("lpi", lambda: attribute("lpi", lm, question, target="answer_logprob", neurons=neurons).scores)
    else:  # parallel attention and MLP (GPT-NeoX, GPT-J): no residual stream entering the FFN alone
        lpi = torch.full((site.n_neurons,), float("nan"))
    flat = {name: s.flatten() for name, s in scores.items()}
    top = flat["neurgrad"].abs().topk(cfg.top_n).indices
    top_deltas = deltas if cfg.top_deltas is None else torch.tensor(cfg.top_deltas, dtype=torch.float64)
    gen = torch.Generator().manual_seed(cfg.seed)
    picks = {n: torch.randperm(site.n_neurons, generator=gen)[:n] for n in cfg.multi_sizes}
    multi_steps = {limit: torch.as_tensor(steps, dtype=torch.float64) for limit, steps in (cfg.multi_steps or ())}
    runs, where = [], []  # every polarity shift of the prompt in one batched call
    for name, s in flat.items():
        for k in cfg.top_k:
            ids = s.abs().topk(k).indices
            runs.append((ids, s[ids], cfg.top_k_steps))
            where.append(("top_k", name))
    for limit, steps in multi_steps.items():
        for n in cfg.multi_sizes:
            runs.append((picks[n], flat["neurgrad"][picks[n]], steps))
            where.append(("multi", limit))
    done = polarity_shifts(lm, question, runs, rows=cfg.rows) if runs else []
    top_k = {name: torch.stack([r.actual for r, w in zip(done, where) if w == ("top_k", name)]) for name in flat}
    multi = {}
    for limit, steps in multi_steps.items():
        these = [r for r, w in zip(done, where) if w == ("multi", limit)]
        multi[limit] = {"sizes": torch.tensor(cfg.multi_sizes), "steps": steps,
                        "predicted": torch.stack([r.predicted for r in these]),
                        "actual": torch.stack([r.actual for r in these])}
    return Study(**scores, acts=attribute("activation", lm, question).scores, lpi=lpi.flatten()[neurons],
                 seconds=seconds, neurons=neurons, sweep=sweep(lm, question, neurons, deltas, rows=cfg.rows),
                 top=top, top_sweep=sweep(lm, question, top, top_deltas, rows=cfg.rows), top_k=top_k, multi=multi)
