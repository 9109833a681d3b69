"""plots: one style, one function per figure, PNG + PDF written deterministically."""
from __future__ import annotations

import hashlib

import matplotlib.pyplot as plt
import numpy as np

from neuronloc import plots


def _figure():
    return plots.top_neurons_per_layer({"IG": np.array([0, 1, 1600, 3 * 1536 + 5]), "NeurGrad": [2, 1537]},
                                       n_layers=4, n_inner=1536)


def test_top_neurons_per_layer_counts_per_layer():
    plots.style()
    fig = _figure()
    lines = [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 4]
    counts = sorted(tuple(line.get_ydata().tolist()) for line in lines)
    assert counts == [(1, 1, 0, 0), (2, 1, 0, 1)]
    assert fig.axes[0].get_xlabel() == "layer"
    plt.close(fig)


def test_save_writes_png_and_pdf_deterministically(tmp_path):
    plots.style()
    digests = []
    for run in ("a", "b"):
        fig = _figure()
        paths = plots.save(fig, "fig", tmp_path / run)
        plt.close(fig)
        assert [p.name for p in paths] == ["fig.png", "fig.pdf"]
        assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
        assert b"CreationDate" not in paths[1].read_bytes()
        digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in paths])
    assert digests[0] == digests[1]


def test_overlap_heatmap_and_change_intervals_draw_the_table():
    import pandas as pd
    plots.style()
    table = pd.DataFrame([[1.0, 0.25], [0.25, 1.0]], index=["a", "b"], columns=["a", "b"])
    fig = plots.overlap_heatmap(table)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["0.25", "0.25", "1.00", "1.00"]
    plt.close(fig)
    changes = pd.DataFrame(dict(task=["t/x"] * 3, method=["a", "b", "b"], op=["Deg", "Deg", "Enh"],
                                rac=[-10.0, 5.0, 2.0], low=[-20.0, 0.0, 1.0], high=[-1.0, 9.0, 3.0]))
    fig = plots.change_intervals(changes, order=["a", "b"])
    ax = fig.axes[0]
    points = sorted(y for line in ax.get_lines() for y in np.atleast_1d(line.get_ydata()).tolist() if y != 0)
    assert [-10.0, 2.0, 5.0] == [p for p in points if p in (-10.0, 2.0, 5.0)]
    assert ax.get_title() == "x"
    plt.close(fig)


def test_neg_figure_shapes_draw_their_data():
    import pandas as pd
    plots.style()
    data = pd.DataFrame({"N": [1, 2, 4, 1, 2, 4], "r": [0.9, 0.8, 0.7, 0.5, 0.4, 0.3], "model": list("aaabbb")})
    fig = plots.lines(data, "N", "r", hue="model", logx=True, chance=0.25)
    ax = fig.axes[0]
    ys = sorted(tuple(line.get_ydata().tolist()) for line in ax.get_lines() if len(line.get_xdata()) == 3)
    assert ys == [(0.5, 0.4, 0.3), (0.9, 0.8, 0.7)] and ax.get_xscale() == "log"
    fig = plots.bars(data, "model", "r", chance=0.25)
    assert sorted(round(p.get_height(), 6) for p in fig.axes[0].patches) == [0.4, 0.8]  # means per model
    fig = plots.heatmap(pd.DataFrame([[0.1, 0.2], [0.3, 0.4]], index=["x", "y"], columns=["u", "v"]))
    assert [t.get_text() for t in fig.axes[0].texts] == ["0.10", "0.20", "0.30", "0.40"]
    fig = plots.histograms({"a": np.arange(10), "b": np.arange(5)}, bins=5)
    assert fig.axes[0].get_yscale() == "log"
    plt.close("all")
