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
