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
