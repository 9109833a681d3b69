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
