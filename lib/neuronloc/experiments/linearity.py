"""Notebook 04: NEG §2-§4 (linearity of single neurons, NeurGrad against the measured NEG).

  factual_prompts  PARAREL facts the model answers correctly, round robin over relations (§2.1)
  on_linear        a sweep restricted to the linear range Δ in [-2, 2] (Tables 1, 2, 5)
  at_sampled       an estimator's values at the sampled neurons of every prompt (Table 2)

A *study* is the `neg.Study` that `neg.study` returns for one prompt; the notebook keeps one per prompt,
in prompt order, in `studies`.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch
from scipy import stats

from .. import metrics, neg
from ..engine import make_query
from ..models import LM
from ..neg import Study
from ..report import number
from ..tasks.loaders import Example, load_examples


def factual_prompts(lm: LM, relations: Sequence[str], n: int, scan: int, seed: int = 0,
                    known: bool = True) -> list[Example]:
    """Up to `n` prompts that `lm` answers correctly (`neg.answered`: single-token answer, the top
    token over the vocabulary; NEG §2.1), from the first `scan` facts (seeded order) of each
    PARAREL relation ("pararel/P103", ...), one pattern per fact (the lowest pattern index among
    them), taken round robin over the relations so that every relation contributes.
    known=False: every prompt with a single-token answer, answered or not (SCALE=smoke on a
    model that answers none, so that every path still runs once)."""
    pools = []
    for relation in relations:
        examples = load_examples(relation, n=scan, seed=seed)
        first = min(e.meta["pattern"] for e in examples)  # one pattern per fact
        pools.append([e for e in examples if e.meta["pattern"] == first])

    def keep(e):
        return neg.answered(lm, e) if known else len(make_query(lm, e).answer_tokens) == 1
    kept = []
    for group in itertools.zip_longest(*pools):  # round robin over the relations
        for e in group:
            if e is not None and len(kept) < n and keep(e):  # stop calling the model once n are kept
                kept.append(e)
    return kept


def on_linear(sweep: torch.Tensor, full_grid: torch.Tensor, linear_grid: torch.Tensor, limit: float) -> torch.Tensor:
    """The columns of `sweep` `[neuron, D]` with |Δ| <= limit, `[neuron, D']`. A sweep was run
    either on `full_grid` (Fig. 2 prompts, Δ in [-10, 10]) or on `linear_grid` ([-2, 2]); its
    width tells which."""
    deltas = full_grid if sweep.shape[1] == len(full_grid) else linear_grid
    return metrics.in_range(deltas, sweep, limit)[1]


def at_sampled(studies: Sequence[Study], name: str) -> torch.Tensor:
    """Estimator `name` ("neurgrad", "grad", "ig": `[layer, neuron]` per study; "lpi": already
    `[n]` at the sampled neurons) at each study's sampled neurons, concatenated over the
    studies in order: `[Σ n]` float64, aligned with the rows of their sweeps."""
    picked = [getattr(s, name) for s in studies]
    return torch.cat([v.flatten()[s.neurons] if v.ndim == 2 else v for v, s in zip(picked, studies)]).double()


# ---------------------------------------------------------------- claims (NG-01 ... NG-14, NG-30 ... NG-33)

def _r(x, y) -> float:
    """Pearson r of two 1-D arrays (nan when either is constant)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def collect(studies: Sequence[Study], full_grid: torch.Tensor, linear_grid: torch.Tensor, cfg, n_inner: int,
            n_layers: int) -> dict:
    """What the claims of notebook 04 need from the per-prompt studies, as numpy arrays with
    the prompt of every row (so intervals resample prompts, the independent unit):

      prompt `[pair]`, truth `[pair]` (ground-truth NEG, slope on the linear range), linear `[pair]`
      (|r| >= cfg.linear_r; a neuron whose output never moves is not linear), est {"NeurGrad",
      "CG", "IG", "LPI": `[pair]`}; fig2_r `[fig2 prompt, limit]` (mean |r| of the prompt's
      neurons on ±limit) and limits; top_linear / top_layer `[prompt, top_n]`; top_k {method:
      `[prompt, K, step]`}; multi_r / multi_shift {limit: `[prompt, N]`} (r over the steps and
      |shift| at the top step), sizes; top10, within10, neg_sum, neg_abs_sum `[prompt]`;
      layer_mean, layer_var `[layer]` (mean |NeurGrad| and variance of NeurGrad per layer).
    """
    names = {"NeurGrad": "neurgrad", "CG": "grad", "IG": "ig", "LPI": "lpi"}
    sweeps = [on_linear(s.sweep, full_grid, linear_grid, cfg.linear_range) for s in studies]
    truth = torch.cat([metrics.neg_slope(linear_grid, w) for w in sweeps]).numpy()
    r_lin = torch.cat([metrics.pearson_r(linear_grid, w) for w in sweeps]).numpy()
    prompt = np.concatenate([np.full(len(w), i) for i, w in enumerate(sweeps)])
    limits = [r for r in (0.2, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0) if r >= cfg.shift_step - 1e-9]
    fig2 = [s for s in studies[:cfg.fig2_prompts] if s.sweep.shape[1] == len(full_grid)]
    fig2_r = np.array([metrics.r_by_range(full_grid, s.sweep, limits).numpy() for s in fig2]).reshape(len(fig2), len(limits))
    top_r = [metrics.pearson_r(linear_grid, on_linear(s.top_sweep, full_grid, linear_grid, cfg.linear_range)).numpy()
             for s in studies]
    neurgrad = torch.stack([s.neurgrad for s in studies]).double()  # [prompt, layer, neuron]
    acts = torch.stack([s.acts for s in studies]).double()
    multi = studies[0].multi
    return {
        "prompt": prompt, "truth": truth, "linear": np.nan_to_num(np.abs(r_lin), nan=0.0) >= cfg.linear_r,
        "est": {k: at_sampled(studies, v).numpy() for k, v in names.items()},
        "fig2_r": fig2_r, "limits": limits,
        "top_linear": np.array([np.nan_to_num(np.abs(r), nan=0.0) >= cfg.linear_r for r in top_r]),
        "top_layer": np.array([(s.top // n_inner).numpy() for s in studies]), "n_layers": n_layers,
        "n_neurons": n_layers * n_inner,
        "top_k": {m: np.array([s.top_k[m].numpy() for s in studies]) for m in ("neurgrad", "grad", "ig")},
        "top_k_sizes": list(cfg.top_k),
        "sizes": list(cfg.multi_sizes), "ranges": list(multi),
        "multi_r": {lim: np.array([[metrics.pearson_r(s.multi[lim]["predicted"][j], s.multi[lim]["actual"][j]).item()
                                    for j in range(len(cfg.multi_sizes))] for s in studies]) for lim in multi},
        "multi_shift": {lim: np.array([s.multi[lim]["actual"][:, -1].abs().numpy() for s in studies]) for lim in multi},
        "multi_range": cfg.multi_range,
        "top10": np.array([metrics.top_share(g, 0.1) for g in neurgrad]),
        "within10": (acts.abs() <= 10).double().mean((1, 2)).numpy(),
        "neg_sum": neurgrad.sum((1, 2)).numpy(), "neg_abs_sum": neurgrad.abs().sum((1, 2)).numpy(),
        "layer_mean": neurgrad.abs().mean((0, 2)).numpy(),
        "layer_var": neurgrad.transpose(0, 1).reshape(n_layers, -1).var(1).numpy(),
    }


def _generality(top_linear, top_layer, n_layers: int) -> tuple[float, float]:
    """(PG, LG) of the linear top neurons (NEG App. A Eq. 5-8): bins are prompts / layers."""
    per_prompt = top_linear.sum(1)
    per_layer = np.bincount(top_layer[top_linear], minlength=n_layers)
    return metrics.generality(torch.as_tensor(per_prompt)), metrics.generality(torch.as_tensor(per_layer))


def _pairs_ci(res: dict, statistic, *names, n_resamples: int, seed: int):
    """`statistic` over the (prompt, neuron) pairs, interval resampling prompts."""
    samples = [res["truth"] if n == "truth" else res["linear"].astype(float) if n == "linear" else res["est"][n]
               for n in names]
    return metrics.bootstrap_ci(statistic, *samples, units=res["prompt"], n_resamples=n_resamples, seed=seed)


def claims(res: dict, cfg, timing: dict | None = None, n_resamples: int = 1000, seed: int = 0,
           figures: str | None = None) -> list:
    """The claims.json rows of notebook 04 from `collect`'s `res` (intervals over prompts)
    and `timing` = {"ig_neurgrad": (mean, lo, hi, [ratios per process]) from
    `process_timing_ratio` with IG as the paper runs it (`cfg.timing_ig_path`),
    "neurgrad_cg": (mean, lo, hi, ratios) from `timing_ratio`, optionally "fast_ig_neurgrad":
    the same ratio against the prefix-cached fast IG, a sensitivity row in the note}
    (NG-09; None: no timing, NG-09 n/a)."""
    from pathlib import Path

    from ..claims import Estimate, measured, na

    fig = (lambda name: Path(figures) / f"{name}.png") if figures else (lambda name: None)
    kw = {"n_resamples": n_resamples, "seed": seed}
    n_prompts = int(len(np.unique(res["prompt"])))
    pairs = lambda triple: Estimate.of(triple, n_prompts, "prompts")
    out = []

    # NG-01: mean |r| at ±10, interval over the Fig. 2 prompts; the trend with range in the note
    fig2, limits = res["fig2_r"], res["limits"]
    if len(fig2):
        per_prompt = fig2
        widest = metrics.unit_mean_ci(per_prompt[:, -1], **kw)
        drop = metrics.diff_ci(per_prompt[:, 0], per_prompt[:, -1], **kw)
        out.append(measured("NG-01", Estimate.of(widest, len(fig2), "prompts"), figure=fig("04_fig2_r_by_range"),
                            note=f"mean |r| on ±{limits[-1]:g}; mean |r| on ±{limits[0]:g} minus on ±{limits[-1]:g}: "
                                 f"{_fmt(drop)} (the 'decreasing with range' half); {fig2.shape[0]} prompts"))
    else:
        out.append(na("NG-01", "no prompt ran on the full Δ grid at this scale"))
    out.append(na("NG-02", "needs several sizes of one model family; the embedded model is one size"))

    # NG-03, NG-04: shares over pairs
    out.append(measured("NG-03", pairs(_pairs_ci(res, np.mean, "linear", **kw)),
                        note=f"{len(res['truth'])} (prompt, neuron) pairs from {n_prompts} prompts"))
    out.append(measured("NG-04", pairs(_pairs_ci(res, lambda t: np.mean(t > 0), "truth", **kw)),
                        note=f"{len(res['truth'])} pairs; negative share {number(np.mean(res['truth'] < 0))}"))

    # NG-05 .. NG-08: estimators against the ground truth
    r_cg = _r(res["est"]["CG"], res["truth"])
    out.append(measured("NG-05", pairs(_pairs_ci(res, lambda c, t: _r(np.abs(c), np.abs(t)) - abs(_r(c, t)), "CG", "truth", **kw)),
                        note=f"r(|CG|, |NEG|) {number(_r(np.abs(res['est']['CG']), np.abs(res['truth'])))}, r(CG, NEG) {number(r_cg)}; "
                             "the paper's −0.429 is not Tab. 2's CG average (−0.215, CLAIMS.md §3.3)"))
    out.append(measured("NG-06", pairs(_pairs_ci(res, lambda g, t: np.mean(np.sign(g) == np.sign(t)), "NeurGrad", "truth", **kw)),
                        note=f"sign(CG) alone agrees for {number(np.mean(np.sign(res['est']['CG']) == np.sign(res['truth'])))}; "
                             "site ffn.mid (act(gate)·up), sign of the unedited activation"))
    rs = {k: _r(v, res["truth"]) for k, v in res["est"].items()}
    rivals = [k for k in ("CG", "IG", "LPI") if np.isfinite(res["est"][k]).all()]  # LPI: not on parallel attention + MLP
    out.append(measured("NG-07", pairs(_pairs_ci(res, lambda g, *x: _r(g, x[-1]) - max(_r(c, x[-1]) for c in x[:-1]),
                                                 "NeurGrad", *rivals, "truth", **kw)),
                        note="pooled r: " + ", ".join(f"{k} {number(v)}" for k, v in rs.items())
                             + ("" if "LPI" in rivals else "; LPI is not defined on this family (no residual stream "
                                                           "entering the FFN alone)")))
    mae = lambda a, t: float(np.mean(np.abs(a - t)))
    out.append(measured("NG-08", pairs(_pairs_ci(res, lambda g, c, t: 1 - mae(g, t) / mae(c, t), "NeurGrad", "CG", "truth", **kw)),
                        note=f"MAE NeurGrad {number(mae(res['est']['NeurGrad'], res['truth']))}, CG {number(mae(res['est']['CG'], res['truth']))}, "
                             f"IG {number(mae(res['est']['IG'], res['truth']))} (the paper's own MAE is not lowest for NeurGrad on 3 of 6 models)"))

    # NG-09: interleaved repetitions in fresh processes, the interval over processes
    if timing:
        mean, lo, hi, per = timing["ig_neurgrad"]
        cg = timing.get("neurgrad_cg")
        fast = timing.get("fast_ig_neurgrad")
        spread = ", ".join(number(float(np.mean(r))) for r in per)
        path = {"reference": "as Dai et al. run it (one layer at a time, the whole sequence, the steps batched)",
                "fast": "on the fast path (prefix cached, rows restarted at their layer)"}[cfg.timing_ig_path]
        out.append(measured("NG-09", Estimate(mean, lo, hi, len(per), "processes"),
                            note=f"IG with {cfg.ig_steps} steps {path} against NeurGrad on this CPU: {len(per)} fresh processes "
                                 f"one after another, each {len(per[0])} interleaved repetition(s) (one prompt each, in turn) of "
                                 f"{cfg.timing_ig_rounds} pair(s) (smallest time of each); process means {spread}, t interval over processes; "
                                 f"NeurGrad / CG {number(cg[0]) if cg else 'not timed'}. Sensitivity, decides nothing: against our "
                                 + (f"prefix-cached fast IG the ratio is {_fmt(fast[:3])} ({len(fast[3])} repetitions in one process; "
                                    "before models.split_rows made NeurGrad faster, it sat at the cut of 10 and moved across it "
                                    "between runs)" if fast else "fast IG: not timed")
                                 + ". The paper's 120× is Llama2-7B on an A6000; ratios, not seconds, are the result"))
    else:
        out.append(na("NG-09", "not timed in this run"))

    # NG-10: smallest NeurGrad advantage over (K, shift, competitor)
    tk = res["top_k"]
    prompts = np.arange(tk["neurgrad"].shape[0])

    def worst(idx):
        g = tk["neurgrad"][idx].mean(0)
        return float(min((g - tk[m][idx].mean(0)).min() for m in ("grad", "ig")))

    boot = metrics.bootstrap_ci(lambda i: worst(i.astype(int)), prompts, **kw)
    out.append(measured("NG-10", Estimate.of(boot, len(prompts), "prompts"), figure=fig("04_fig3_top_k"),
                        note=f"K in {res['top_k_sizes']}, {tk['neurgrad'].shape[2]} shifts, competitors CG and IG; LPI not ranked "
                             "(all-neuron LPI per prompt costs one read-out per neuron)"))
    out.append(na("NG-11", "BERT masked LMs: the read-out is causal-LM only"))

    # NG-12, NG-31, NG-32: per-prompt statistics
    out.append(measured("NG-12", Estimate.of(metrics.unit_mean_ci(res["top10"], **kw), len(res["top10"]), "prompts"),
                        figure=fig("04_fig4_cumulative_neg")))

    # NG-13, NG-14: multi-neuron additivity
    sizes, big = res["sizes"], max(res["sizes"])
    main = res["multi_r"][res["multi_range"]]
    j = sizes.index(big)
    same_share = min(sizes, key=lambda n: abs(n / res["n_neurons"] - 4096 / 352_256))  # 2^12 of Llama2-7B's neurons
    r_trend = stats.spearmanr(sizes, np.nanmean(main, 0)).statistic if len(sizes) > 2 else math.nan
    shift_trend = stats.spearmanr(sizes, res["multi_shift"][res["multi_range"]].mean(0)).statistic if len(sizes) > 2 else math.nan
    out.append(measured("NG-13", Estimate.of(_nan_mean_ci(main[:, j], kw), int(np.isfinite(main[:, j]).sum()), "prompts"),
                        figure=fig("04_fig5_multi"),
                        note=f"N = {big}; r at N = {same_share} (the share of neurons 2^12 is of Llama2-7B's): "
                             f"{number(np.nanmean(main[:, sizes.index(same_share)]))}; Spearman(N, r) {number(r_trend)}, "
                             f"Spearman(N, |shift|) {number(shift_trend)}; r at each N: "
                             + ", ".join(f"{n} {number(v)}" for n, v in zip(sizes, np.nanmean(main, 0)))))
    widest = max(res["ranges"])
    at_big = [np.nanmean(res["multi_r"][lim][:, j]) for lim in sorted(res["ranges"])]
    range_trend = stats.spearmanr(sorted(res["ranges"]), at_big).statistic if len(at_big) > 2 else math.nan
    col = res["multi_r"][widest][:, j]
    out.append(measured("NG-14", Estimate.of(_nan_mean_ci(col, kw), int(np.isfinite(col).sum()), "prompts"),
                        figure=fig("04_fig14_multi_ranges"),
                        note=f"N = {big}, range [0, {widest:g}]; Spearman(range, r) {number(range_trend)}; r per range: "
                             + ", ".join(f"[0, {lim:g}] {number(v)}" for lim, v in zip(sorted(res["ranges"]), at_big))))

    # NG-30: PG and LG of the linear top neurons, interval over prompts
    tl, ly = res["top_linear"], res["top_layer"]
    boot = metrics.bootstrap_ci(lambda i: min(_generality(tl[i.astype(int)], ly[i.astype(int)], res["n_layers"])),
                                np.arange(len(tl)), **kw)
    pg, lg = _generality(tl, ly, res["n_layers"])
    layers_hit = int((np.bincount(ly[tl], minlength=res["n_layers"]) > 0).sum())
    out.append(measured("NG-30", Estimate.of(boot, len(tl), "prompts"),
                        note=f"linear ratio {number(tl.mean())}, PG {number(pg)}, LG {number(lg)}; LG's coverage term: {layers_hit} of "
                             f"{res['n_layers']} layers hold a linear top neuron, from {len(tl)} prompts × {tl.shape[1]} neurons "
                             "(paper 1,000 × 100): coverage grows with the number of prompts"))
    out.append(measured("NG-31", Estimate.of(metrics.unit_mean_ci(res["within10"], **kw), len(res["within10"]), "prompts"),
                        figure=fig("04_fig10_activations")))
    ratio = metrics.bootstrap_ci(lambda s, a: np.sum(s) / np.sum(a), res["neg_sum"], res["neg_abs_sum"], **kw)
    out.append(measured("NG-32", Estimate.of(ratio, len(res["neg_sum"]), "prompts"), figure=fig("04_fig11_neg")))
    mean_var_r = _r(res["layer_mean"], res["layer_var"])
    out.append(na("NG-33", "holds by construction: NEG has mean ≈ 0 (NG-32), so a layer's variance is about its mean "
                           "square, which grows with the layer's mean |NEG|; any change of scale across layers makes the "
                           f"correlation positive. Measured r(layer mean |NEG|, layer variance) = {number(mean_var_r)}, "
                           f"largest mean |NEG| at layer {int(np.argmax(res['layer_mean']))} of {res['n_layers']}",
                  flags=["by construction"], figure=fig("04_fig12_layers")))
    order = {c.id: c for c in out}
    return [order[i] for i in sorted(order)]


def _nan_mean_ci(values, kw) -> tuple[float, float, float]:
    """Mean over the finite entries (a prompt whose output never moves has r = nan) with the interval."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return 0.0, math.nan, math.nan
    return metrics.unit_mean_ci(v, **kw)


def _fmt(triple) -> str:
    v, lo, hi = triple
    return f"{number(v)} [{number(lo)}, {number(hi)}]"


def timing_ratio(lm, prompts: Sequence, a: str, b: str, repetitions: int, seed: int = 0, a_kwargs=None, b_kwargs=None,
                 rounds: int = 1, a_warmup=None):
    """`metrics.repeated_ratio` of `attribute(a)` over `attribute(b)` (NG-09: a = "ig", b = "neurgrad"):
    interleaved a, b, a, b, ..., each repetition on the next prompt in turn (the warm-up pair on
    the first), so the interval covers prompts; `rounds` pairs per repetition on its prompt, the
    ratio of their smallest times (`metrics.repeated_ratio`). a_warmup: kwargs replacing a_kwargs'
    in the warm-up call of a only (the same code, cheaper: one layer of a slow IG). Returns
    (mean, lo, hi, ratios)."""
    from ..attribution import attribute

    calls = {"a": 0}

    def prompt():  # call 0 is the warm-up (first prompt), then `rounds` calls per prompt in turn
        c = calls["a"] - 1
        return prompts[0 if c == 0 else ((c - 1) // rounds + 1) % len(prompts)]

    def run_a():
        calls["a"] += 1
        warm = a_warmup if calls["a"] == 1 else None
        return attribute(a, lm, prompt(), **{**(a_kwargs or {}), **(warm or {})})

    def run_b():
        return attribute(b, lm, prompt(), **(b_kwargs or {}))

    return metrics.repeated_ratio(run_a, run_b, repetitions=repetitions, seed=seed, rounds=rounds)


def _timing_child(model: str, threads: int, args: tuple, kwargs: dict) -> list:
    """`timing_ratio` in a fresh process: the model loaded by name, the parent's thread count.
    Warnings are ignored there: the calls are timed, their scores are not used (the warm-up's
    2-step IG misses the completeness check by design)."""
    import warnings

    from ..models import load_model

    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    return timing_ratio(load_model(model), *args, **kwargs)[3]


def process_timing_ratio(model: str, prompts: Sequence, a: str, b: str, processes: int, repetitions: int, seed: int = 0,
                         a_kwargs=None, b_kwargs=None, rounds: int = 1, level: float = 0.95, child=_timing_child, a_warmup=None):
    """`timing_ratio` in `processes` fresh processes run one after another (spawned; each loads
    `model` by name and uses this process's thread count), `repetitions` interleaved
    repetitions in each. The IG / NeurGrad ratio moved between runs of one machine (9.5, 9.8,
    10.5, 10.7 at NG-09's cut of 10) more than an interval over one process's repetitions
    allowed (+-0.5), so the process is the unit: returns (mean of the process means, its t
    interval over processes (`metrics.t_mean_ci`), [per-process ratios])."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    per = []
    for p in range(processes):
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            per.append(pool.submit(child, model, torch.get_num_threads(), (prompts, a, b, repetitions, seed + p),
                                   dict(a_kwargs=a_kwargs, b_kwargs=b_kwargs, rounds=rounds, a_warmup=a_warmup)).result())
    return (*metrics.t_mean_ci([float(np.mean(r)) for r in per], level), per)
