"""Figures: one function per figure, one style, saved as PNG and PDF.

    from neuronloc import plots
    plots.style()                                           # once, at the top of a notebook
    fig = plots.top_neurons_per_layer({"IG": ig.top(150)}, site.n_layers, site.n_inner)
    plots.save(fig, "00_top_neurons_per_layer", FIGURES_DIR)   # -> .png and .pdf

Each figure function takes plain results (scores, neuron ids, tables), draws with seaborn and
returns the matplotlib Figure; it computes nothing that a library function already does.
`save` writes `<figures_dir>/<name>.png` and `.pdf` deterministically (no creation date in
the PDF, fixed DPI), so re-running a notebook changes a figure file only when its content changes.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

DPI = 150
PALETTE = "colorblind"


def style() -> None:
    """The one style of every figure: seaborn whitegrid, colour-blind palette, fixed size."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({
        "figure.figsize": (7.0, 3.6), "figure.dpi": 100, "savefig.dpi": DPI, "savefig.bbox": "tight",
        "axes.titlesize": "medium", "legend.frameon": False,
        "svg.hashsalt": "neuronloc", "pdf.compression": 6,
    })


def save(fig: plt.Figure, name: str, figures_dir: str | os.PathLike) -> list[Path]:
    """Write `fig` as `<figures_dir>/<name>.png` and `.pdf`; returns both paths.
    No timestamps: the PDF's CreationDate is dropped and the PNG carries no date."""
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=DPI, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Producer": None, "Creator": None})
    return paths


def top_neurons_per_layer(top: Mapping[str, Sequence[int]], n_layers: int, n_inner: int,
                          title: str | None = None) -> plt.Figure:
    """How the top neurons of each scoring spread over the layers.

    `top`: {scoring name: flat neuron ids (layer * n_inner + index)}, e.g. `scores.top(150)`
    of several scorers; one line of neuron counts per layer for each.
    """
    rows = []
    for name, ids in top.items():
        ids = np.asarray(ids if not hasattr(ids, "numpy") else ids.numpy(), dtype=np.int64).ravel()
        counts = np.bincount(ids // n_inner, minlength=n_layers)
        rows += [{"layer": layer, "neurons": int(c), "scoring": f"{name} (top {len(ids)})"} for layer, c in enumerate(counts)]
    data = pd.DataFrame(rows)
    fig, ax = plt.subplots()
    sns.lineplot(data=data, x="layer", y="neurons", hue="scoring", marker="o", ax=ax)
    ax.set(xlabel="layer", ylabel="neurons among the top", xlim=(-0.5, n_layers - 0.5))
    ax.set_title(title or "Where the top neurons are, per layer")
    ax.legend(title=None)
    return fig


def overlap_heatmap(table: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """A square table of set overlaps in [0, 1] (e.g. Jaccard of methods' neuron sets), annotated."""
    n = len(table)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.6 + 0.5 * n))
    sns.heatmap(table, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="mako", square=True, cbar=False, ax=ax)
    ax.set(xlabel=None, ylabel=None)
    ax.set_title(title or "Overlap of neuron sets")
    return fig


def change_intervals(changes: pd.DataFrame, order: Sequence[str], title: str | None = None) -> plt.Figure:
    """Signed relative changes (%) with their intervals: one panel per task, one point per
    method and intervention. `changes`: columns task, method, op, rac, low, high (several
    rows of one method, e.g. random seeds, are drawn side by side)."""
    tasks = list(dict.fromkeys(changes["task"]))
    ops = list(dict.fromkeys(changes["op"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), sharey=True, squeeze=False)
    colors = dict(zip(ops, sns.color_palette(PALETTE, len(ops))))
    for ax, task in zip(axes[0], tasks):
        part = changes[changes["task"] == task]
        for j, op in enumerate(ops):
            rows = part[part["op"] == op]
            x = np.array([order.index(m) for m in rows["method"]], dtype=float) + (j - (len(ops) - 1) / 2) * 0.25
            ax.errorbar(x, rows["rac"], yerr=[rows["rac"] - rows["low"], rows["high"] - rows["rac"]], fmt="o",
                        ms=3, lw=1, color=colors[op], label=op)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set_xticks(range(len(order)), order, rotation=60)
        ax.set_title(task.split("/")[-1])
    axes[0][0].set_ylabel("signed RAC (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    keep = dict(zip(labels, handles))
    fig.legend(keep.values(), keep.keys(), loc="upper right")
    fig.suptitle(title or "Relative accuracy change per method")
    return fig


def neuron_map(scores: Mapping[str, "np.ndarray"], masks: Mapping[str, "np.ndarray"] | None = None, width: int = 32,
               title: str | None = None) -> plt.Figure:
    """CNL Fig. 4: where the located neurons are, one panel per data set.

    scores: {data set: `[layer, neuron]` scores}; each cell shows the largest |score| among
    `width` neighbouring neurons of a layer (the paper takes 100), scaled to the panel's
    maximum. masks (optional): {data set: bool `[layer, neuron]`}; the cells holding a
    located neuron are outlined.
    """
    names = list(scores)
    fig, axes = plt.subplots(len(names), 1, figsize=(7.0, 1.7 * len(names) + 0.4), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        s = np.abs(np.nan_to_num(np.asarray(scores[name], dtype=np.float64)))
        layers, n = s.shape
        cols = -(-n // width)
        pooled = np.pad(s, ((0, 0), (0, cols * width - n))).reshape(layers, cols, width).max(-1)
        pooled = pooled / pooled.max() if pooled.max() > 0 else pooled
        sns.heatmap(pooled, ax=ax, cmap="Blues", vmin=0, vmax=1, cbar=False, xticklabels=False, yticklabels=5)
        if masks is not None and name in masks:
            m = np.asarray(masks[name], dtype=bool)
            hit = np.pad(m, ((0, 0), (0, cols * width - n))).reshape(layers, cols, width).any(-1)
            ys, xs = np.nonzero(hit)
            ax.scatter(xs + 0.5, ys + 0.5, s=6, facecolors="none", edgecolors="C3", linewidths=0.6)
        ax.set_ylabel(f"{name}\nlayer")
        ax.invert_yaxis()
    axes[-1, 0].set_xlabel(f"neuron (groups of {width}: largest |score|; red: holds a located neuron)")
    fig.suptitle(title or "Located neurons per data set")
    return fig


def cross_data(tables: Mapping[str, pd.DataFrame], title: str | None = None) -> plt.Figure:
    """CNL Fig. 5: accuracy change (points) of each tested data set (columns) when the
    neurons located on a data set (rows) are enhanced or erased; one panel per table."""
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.4), squeeze=False)
    for ax, (name, table) in zip(axes[0], tables.items()):
        limit = max(float(np.nanmax(np.abs(table.to_numpy(dtype=float)))), 1e-9)
        sns.heatmap(table.astype(float), ax=ax, cmap="RdBu", center=0, vmin=-limit, vmax=limit, annot=True, fmt=".0f",
                    cbar=False)
        ax.set(title=name, xlabel="tested data set", ylabel="neurons of")
    fig.suptitle(title or "Effect of the located neurons on other data sets (accuracy change, points)")
    fig.tight_layout()
    return fig


def convergence(rows: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """CNL Fig. 6: overlap of the two halves' masks against the number of examples.

    rows: columns size, overlap, data (data set), and optionally chance (random sets of
    the same sizes, drawn dashed); one line per data set, mean and 95 % interval over splits.
    """
    rows = pd.DataFrame(rows).reset_index(drop=True)  # rows concatenated per data set repeat index labels
    fig, ax = plt.subplots()
    sns.lineplot(data=rows, x="size", y="overlap", hue="data", marker="o", errorbar=("ci", 95), ax=ax)
    if "chance" in rows:
        chance = rows.groupby(["data", "size"], sort=False)["chance"].mean().reset_index()
        sns.lineplot(data=chance, x="size", y="chance", hue="data", linestyle="--", legend=False, ax=ax, alpha=0.6)
    ax.set(xscale="log", xlabel="examples used to locate (both halves)", ylabel="overlap of the halves' masks",
           ylim=(-0.02, 1.02))
    ax.set_title(title or "Localization consistency vs data size (dashed: random sets of the same sizes)")
    ax.legend(title=None)
    return fig


# Figures of NEG (notebooks 04, 05) share four shapes; each takes a tidy DataFrame.

def lines(data: pd.DataFrame, x: str, y: str, hue: str | None = None, title: str = "", logx: bool = False,
          chance: float | None = None, ylabel: str | None = None, errorbar=None) -> plt.Figure:
    """y over x, one line per `hue` (NEG Fig. 2 |r| vs shift range, Fig. 3 top-K shifts,
    Fig. 4 cumulative |NEG|, Fig. 5/14 r vs neuron count, Fig. 7 accuracy vs training size,
    Fig. 8 windows, Fig. 16/17 accuracy vs neuron count). chance: a dashed reference line."""
    fig, ax = plt.subplots()
    sns.lineplot(data=data, x=x, y=y, hue=hue, marker="o" if len(data) < 200 else None, ax=ax, errorbar=errorbar)
    if logx:
        ax.set_xscale("log", base=2)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set(xlabel=x, ylabel=ylabel or y, title=title)
    if hue is not None or chance is not None:
        ax.legend(title=None)
    return fig


def bars(data: pd.DataFrame, x: str, y: str, hue: str | None = None, title: str = "",
         chance: float | None = None) -> plt.Figure:
    """Grouped bars (NEG Fig. 6: probe accuracy per task; Fig. 12: |NEG| per layer)."""
    fig, ax = plt.subplots()
    sns.barplot(data=data, x=x, y=y, hue=hue, ax=ax, errorbar=None)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel=x, ylabel=y, title=title)
    ax.tick_params(axis="x", rotation=30)
    if hue is not None:
        ax.legend(title=None, fontsize="small")
    return fig


def heatmap(matrix: pd.DataFrame, title: str = "", fmt: str = ".2f", xlabel: str | None = None,
            ylabel: str | None = None) -> plt.Figure:
    """A labelled matrix (NEG Fig. 9 accuracy over trees x depth; Fig. 21 robustness X -> Y)."""
    fig, ax = plt.subplots()
    sns.heatmap(matrix, annot=True, fmt=fmt, cmap="viridis", ax=ax, cbar=True)
    ax.set(title=title, xlabel=xlabel or matrix.columns.name or "", ylabel=ylabel or matrix.index.name or "")
    return fig


def histograms(values: dict, title: str = "", xlabel: str = "value", bins: int = 60, logy: bool = True) -> plt.Figure:
    """Histograms of named value sets on one axis (NEG Fig. 10 activations, Fig. 11 NEGs)."""
    data = pd.concat([pd.DataFrame({xlabel: np.asarray(v, dtype=float).ravel(), "set": k}) for k, v in values.items()])
    fig, ax = plt.subplots()
    sns.histplot(data=data, x=xlabel, hue="set" if len(values) > 1 else None, bins=bins, ax=ax, element="step")
    if logy:
        ax.set_yscale("log")
    ax.set(title=title)
    return fig


def paraphrase_overlap(table: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """CNL §3.1 fidelity: overlap of the located sets per localizer, for paraphrases of one fact
    and for the baselines. `table`: one row per (method, comparison) with columns method,
    comparison, overlap, lo, hi (the interval; NaN where there is none), overlaps in 0..1."""
    fig, ax = plt.subplots()
    sns.barplot(data=table, x="method", y="overlap", hue="comparison", ax=ax, errorbar=None)
    comparisons = list(dict.fromkeys(table["comparison"]))
    for bars, comparison in zip(ax.containers, comparisons):
        rows = table[table["comparison"] == comparison].set_index("method")
        for bar, method in zip(bars, rows.index):
            lo, hi = rows.loc[method, ["lo", "hi"]]
            if np.isfinite(lo) and np.isfinite(hi):
                x = bar.get_x() + bar.get_width() / 2
                ax.plot([x, x], [lo, hi], color="black", lw=1)
    ax.set(xlabel=None, ylabel="overlap (CNL Eq. 9)", ylim=(0, 1))
    ax.set_title(title or "Overlap of located sets across paraphrases")
    ax.legend(title=None)
    return fig


def edit_by_layer(rows: pd.DataFrame, traced: Sequence[int] = (), title: str | None = None) -> plt.Figure:
    """CNL Fig. 2: ROME edit success per edited layer. `rows`: columns layer, prompt
    ("edited" or "paraphrase"), success (0/1 per fact); mean and 95 % interval over facts.
    traced: layers the causal trace put first (marked)."""
    fig, ax = plt.subplots()
    sns.lineplot(data=rows, x="layer", y="success", hue="prompt", marker="o", ax=ax, errorbar=("ci", 95))
    for layer in sorted(set(traced)):
        ax.axvline(layer, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="edited layer", ylabel="P(new object) > P(true object)", ylim=(-0.02, 1.02))
    ax.set_title(title or "ROME edit success by edited layer")
    ax.legend(title=None)
    return fig


def intersection_by_count(curves: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """CNL §4.2: n-way coincidence (Eq. 6, t = t*) of the located sets of n samples against n.
    `curves`: columns n, coincidence, set (e.g. "answer", "code", "random sets")."""
    fig, ax = plt.subplots()
    sns.lineplot(data=curves, x="n", y="coincidence", hue="set", marker="o", ax=ax, errorbar=None)
    ax.set(xscale="log", xlabel="samples intersected (n)", ylabel="|intersection| / mean set size")
    ax.set_title(title or "Neurons shared by all n samples of one task requirement")
    ax.legend(title=None)
    return fig


def change_heatmap(table: pd.DataFrame, title: str | None = None, label: str = "change (%)") -> plt.Figure:
    """A table of signed changes (e.g. RAC of one task's neurons, columns, on another task's
    data, rows; NeuronLLM Fig. 2/4, Fig. 7), diverging colours centred on 0, annotated."""
    rows, cols = table.shape
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * cols, 0.8 + 0.55 * rows))
    vmax = float(np.nanmax(np.abs(table.to_numpy(dtype=float)))) if table.size else 1.0
    sns.heatmap(table.astype(float), annot=True, fmt=".1f", center=0, vmin=-vmax or -1, vmax=vmax or 1,
                cmap="vlag_r", cbar_kws={"label": label}, ax=ax)
    ax.set_title(title or "Change per cell")
    return fig


def timing_lines(times: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """Seconds per FFN layer against answer length, one line per target (NeuronLLM Fig. 9).
    `times`: columns answer_tokens, seconds_per_layer, target."""
    fig, ax = plt.subplots()
    sns.lineplot(data=times, x="answer_tokens", y="seconds_per_layer", hue="target", marker="o", ax=ax)
    ax.set(xlabel="answer length (tokens)", ylabel="seconds per FFN layer", ylim=(0, None))
    ax.set_title(title or "Attribution time per layer")
    ax.legend(title=None)
    return fig


def probability_shifts(shifts: pd.DataFrame, title: str | None = None) -> plt.Figure:
    """Cross-entropy of the correct option per question under each control (NeuronLLM
    Fig. 10, as distributions). `shifts`: columns control, mode, ce."""
    modes = list(dict.fromkeys(shifts["mode"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(3.6 * len(modes), 3.4), squeeze=False, sharey=True)
    for ax, mode in zip(axes[0], modes):
        part = shifts[shifts["mode"] == mode]
        sns.boxplot(data=part, x="control", y="ce", ax=ax, color="0.85", fliersize=2)
        ax.set(xlabel=None, ylabel="cross-entropy of the correct option", title=mode)
        ax.tick_params(axis="x", rotation=60)
    fig.suptitle(title or "Option probabilities under control")
    return fig


VERDICT_COLORS = {"replicated": "#2a9d50", "contradicted": "#d1495b", "inconclusive": "#8d99ae"}


def standardized(claim) -> tuple[float, float, float]:
    """A claim's estimate and interval on one axis for all claims: the distance from the rule's
    threshold in units of the paper's effect (`rule["effect"]`; else the interval's half-width,
    else 1), signed so that the claimed direction is positive. `within [a, b]`: 1 - |x - c| / w
    (c, w the bounds' centre and half-width: > 0 inside). `exact`: (x - t) / tolerance.
    Returns (value, lo, hi); lo, hi nan without an interval."""
    rule = claim.rule
    lo, hi = (np.nan if x is None else x for x in claim.ci)
    x = np.array([claim.estimate, lo, hi], dtype=float)
    if rule["kind"] == "within":
        a, b = rule["bounds"]
        c, w = (a + b) / 2, max((b - a) / 2, 1e-12)
        z = 1 - np.abs(x - c) / w
        inside = lo <= c <= hi  # the interval straddles the centre: its best point is 1
        return z[0], min(z[1], z[2]), (1.0 if inside else max(z[1], z[2]))
    if rule["kind"] == "exact":
        scale = max(rule["tolerance"], 1e-12)
        z = (x - rule["threshold"]) / scale
        return tuple(z)
    half = (hi - lo) / 2 if np.isfinite(lo) else np.nan
    scale = abs(rule.get("effect") or 0) or (half if np.isfinite(half) and half > 0 else 0) or 1.0
    sign = 1 if rule["kind"] == "greater" else -1
    z = sign * (x - rule["threshold"]) / scale
    return z[0], min(z[1], z[2]), max(z[1], z[2])


def verdict_forest(claims: Sequence, title: str | None = None) -> plt.Figure:
    """REPORT.md's forest plot: one row per measured claim (id), its estimate and 95 % interval
    against its threshold (0) in units of the paper's effect (`standardized`; the dotted line
    at 0.5 is the usual smallest effect of interest, the dashed one at 1 the paper's effect),
    coloured by verdict. Values beyond ±4 are drawn at the edge."""
    rows = [(c.id, c.verdict, *standardized(c)) for c in claims]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(rows) + 1.4))
    limit = 4.0
    for y, (id, verdict, v, lo, hi) in enumerate(rows):
        color = VERDICT_COLORS.get(verdict, "black")
        if np.isfinite(lo):
            ax.plot(np.clip([lo, hi], -limit, limit), [y, y], color=color, lw=2)
        ax.plot(np.clip(v, -limit, limit), y, "o", color=color, ms=4)
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(0.5, color="grey", lw=0.6, ls=":")
    ax.axvline(1, color="grey", lw=0.6, ls="--")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-limit - 0.2, limit + 0.2)
    ax.set_xlabel("estimate − threshold, in units of the paper's effect (claimed direction →)")
    for verdict, color in VERDICT_COLORS.items():
        ax.plot([], [], "o-", color=color, label=verdict)
    ax.legend(loc="lower right", fontsize=7, frameon=True)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
