"""REPORT.md from synthetic claims.json files: every id present, counts, figure links, header."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from neuronloc import report
from neuronloc.claims import Claim, ClaimError, na, registry, write_claims


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "results" / "tiny-model"
    figures = tmp_path / "figures" / "tiny-model"
    figures.mkdir(parents=True)
    (figures / "01_bad.png").write_bytes(b"png")
    write_claims(run / "01_neuronllm" / "claims.json", [
        Claim("NL-17", "exciting bad neurons lowers Acc more than random", "44.6/54.5", 3.14159, "RAC %",
              "replicated", note="cloze read-out", figure=figures / "01_bad.png"),
        Claim("NL-01", "ACE beats TN", "51.4/66.5", -2.0, "RAC %", "not replicated"),
        na("NL-13", "needs two sizes of one model family"),
    ])
    write_claims(run / "05_neg" / "claims.json", [
        Claim("NG-03", "most neurons are linear", ".9659", 0.91, "share", "replicated",
              figure=figures / "05_missing.png"),
    ])
    (run / "timings.json").write_text(json.dumps({
        "model": "tiny/model", "scale": "default", "seed": 3,
        "environment": {"python": "3.11", "torch": "2.13.0", "device": "cpu (2 cores)"},
        "notebooks": {"01_neuronllm": {"seconds": 3600.4, "status": "ok"},
                      "05_neg": {"seconds": 125, "status": "ok"}}}))
    return run


def _rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\| ((NL|CN|NG)-\d\d) \|", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    return rows


def test_report_lists_every_claim(run_dir):
    path = report.write_report(run_dir)
    assert path == run_dir / "REPORT.md"
    text = path.read_text()
    rows = _rows(text)
    assert list(rows) == [e["id"] for e in registry()]  # all 97, in order
    assert rows["NL-17"][3] == "3.14 RAC %" and rows["NL-17"][4] == "replicated"
    assert rows["NL-17"][5] == "[01_bad](../../figures/tiny-model/01_bad.png)"
    assert "cloze read-out" in rows["NL-17"][6] and "01_neuronllm" in rows["NL-17"][6]
    assert rows["NL-01"][4] == "not replicated"
    assert rows["NL-13"][4] == "n/a" and "two sizes" in rows["NL-13"][6]
    assert rows["NG-03"][5].startswith("missing:")
    assert rows["CN-01"][4] == report.NOT_RUN and rows["CN-01"][3] == "—"
    assert "⚠" in rows["CN-16"][6] and "29.61, not 28.95" in text  # the paper's own inconsistency


def test_report_header_and_counts(run_dir):
    text = report.render(run_dir)
    assert "model: `tiny/model`" in text and "scale: `default`, seed: `3`" in text
    assert re.search(r"commit: `(\w+|unknown.*)`", text)
    assert "wall time: 1 h 02 min (2 notebooks)" in text
    assert "| 01_neuronllm | ok | 1 h 00 min | 3 |" in text
    # paper | claims | replicated | not replicated | n/a | not run yet
    assert "| NeuronLLM | 38 | 1 | 1 | 36 | 35 |" in text
    assert "| NEG | 34 | 1 | 0 | 33 | 33 |" in text
    assert "| **all** | **97** | **2** | **1** | **94** | **93** |" in text


def test_report_without_timings_says_so(tmp_path):
    run = tmp_path / "m"
    write_claims(run / "01_a" / "claims.json", [na("CN-05", "no knowledge-circuit code")])
    text = report.render(run)
    assert "unknown (no timings.json)" in text
    assert len(_rows(text)) == 97


def test_a_claim_from_two_notebooks_is_an_error(run_dir):
    write_claims(run_dir / "02_other" / "claims.json", [na("NL-01", "again")])
    with pytest.raises(ClaimError, match="NL-01.*01_neuronllm.*02_other"):
        report.render(run_dir)


def test_cli(run_dir, capsys):
    results = run_dir.parent
    assert report.main(["--model-slug", "tiny-model", "--results", str(results)]) == 0
    assert (run_dir / "REPORT.md").exists()
    with pytest.raises(SystemExit):
        report.main(["--model-slug", "nothing-here", "--results", str(results)])


def test_rounded_keeps_two_significant_digits():
    assert report.rounded(0.28575) == 0.29 and report.rounded(-0.014123) == -0.014 and report.rounded(13.34) == 13.0
    assert report.rounded(0.0) == 0.0 and report.rounded(7) == 7 and report.rounded(0.28575, 3) == 0.286
    df = pd.DataFrame({"layer": [0, 24], "IG": [0.3914, 0.2857], "name": ["a", "b"]})
    out = report.rounded(df)
    assert out["IG"].tolist() == [0.39, 0.29] and out["layer"].tolist() == [0, 24] and out["name"].tolist() == ["a", "b"]
    assert report.rounded(pd.Series([0.9821, 0.0163])).tolist() == [0.98, 0.016]
    assert report.rounded(np.array([0.5551, 1234.5])).tolist() == [0.56, 1200.0]
    assert report.rounded(np.float32(0.6061)) == 0.61


def test_make_report_runs_the_module():
    makefile = (report.ROOT / "Makefile").read_text()
    assert re.search(r"^report: setup\n\t\$\(PY\) -m neuronloc\.report --model \"\$\(MODEL\)\" --scale \$\(SCALE\)", makefile, re.M)
