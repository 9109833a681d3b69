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
