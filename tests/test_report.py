"""REPORT.md from synthetic claims.json files: every id present, counts, figure links, header."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from neuronloc import claims, report
from neuronloc.claims import Claim, ClaimError, Estimate, measured, na, registry, write_claims


RULES = {"NL-17": {"kind": "greater", "threshold": 0.0, "sesoi": 22.3, "effect": 44.6, "unit": "RAC %"},
         "NL-01": {"kind": "greater", "threshold": 0.0, "sesoi": 8.4, "effect": 16.8, "unit": "pp"},
         "NL-13": {"kind": "greater", "threshold": 0.0, "sesoi": 0.0, "unit": ""},
         "NG-03": {"kind": "greater", "threshold": 0.5, "sesoi": 0.2, "effect": 0.47, "unit": "share"},
         "NG-04": {"kind": "within", "bounds": [0.4, 0.6], "sesoi": 0.0, "unit": "share"},
         "CN-05": {"kind": "greater", "threshold": 0.0, "sesoi": 0.0, "unit": ""}}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "rules", lambda: RULES)
    run = tmp_path / "results" / "tiny-model"
    figures = tmp_path / "figures" / "tiny-model"
    figures.mkdir(parents=True)
    (figures / "01_bad.png").write_bytes(b"png")
    write_claims(run / "01_neuronllm" / "claims.json", [
        measured("NL-17", Estimate(3.14159, 1.5, 4.75, 120, "questions"), note="cloze read-out",
                 figure=figures / "01_bad.png"),
        measured("NL-01", Estimate(-2.0, -30.0, 26.0, 30, "questions")),
        na("NL-13", "needs two sizes of one model family"),
    ])
    write_claims(run / "05_neg" / "claims.json", [
        measured("NG-03", Estimate(0.31, 0.28, 0.34, 8, "prompts"), figure=figures / "05_missing.png"),
        measured("NG-04", Estimate(0.5, 0.45, 0.55, 8, "prompts")),
    ])
    (run / "05_neg" / "protocol.md").write_text("mceval8k/myriadlama, cloze read-out, 8 prompts\n")
    (run / "timings.json").write_text(json.dumps({
        "model": "tiny/model", "scale": "default", "seed": 3,
        "environment": {"python": "3.11", "torch": "2.13.0", "device": "cpu (2 cores)"},
        "notebooks": {"01_neuronllm": {"seconds": 3600.4, "status": "ok"},
                      "05_neg": {"seconds": 125, "status": "ok", "cache_entries_written": 0, "computed_seconds": 700.2}}}))
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
    # id | claim | paper value | estimate [CI] | n | rule | verdict | flags | figure | notes
    assert rows["NL-17"][3] == "3.14 [1.5, 4.75] RAC %" and rows["NL-17"][4] == "120 questions"
    assert rows["NL-17"][5] == "CI above 0 RAC % (contradicted if below 22.3)" and rows["NL-17"][6] == "replicated"
    assert rows["NL-17"][8] == "[01_bad](../../figures/tiny-model/01_bad.png)"
    assert "cloze read-out" in rows["NL-17"][9] and "01_neuronllm" in rows["NL-17"][9]
    assert rows["NL-01"][6] == "inconclusive" and "underpowered" in rows["NL-01"][7]
    assert "below the sesoi" in rows["NL-17"][7]  # replicated, and [1.5, 4.75] is under 0 + 22.3
    assert "below the sesoi" not in rows["NG-04"][7] + rows["NL-01"][7] + rows["NG-03"][7]
    assert "paper inconsistent" in rows["NL-01"][7]  # CLAIMS.md: NL-01's averages include Fail cells
    assert rows["NL-13"][6] == "n/a" and "two sizes" in rows["NL-13"][9] and rows["NL-13"][3] == "—"
    assert rows["NG-03"][6] == "contradicted" and rows["NG-03"][8].startswith("missing:")
    assert rows["NG-04"][6] == "replicated" and rows["NG-04"][5] == "CI inside [0.4, 0.6] share (contradicted if disjoint)"
    assert rows["CN-01"][6] == report.NOT_RUN and rows["CN-01"][3] == "—"
    assert "29.61, not 28.95" in text  # the paper's own inconsistency, listed under the table
    assert "- **05_neg**: mceval8k/myriadlama, cloze read-out, 8 prompts" in text


def test_report_header_and_counts(run_dir):
    text = report.render(run_dir)
    assert "model: `tiny/model`" in text and "scale: `default`, seed: `3`" in text
    assert re.search(r"commit: `(\w+|unknown.*)`", text)
    assert "wall time: 1 h 02 min (2 notebooks)" in text
    assert "| 01_neuronllm | ok | 1 h 00 min | 3 |" in text
    assert "| 05_neg | ok | 2 min 05 s (from its cache; last computing run 11 min 40 s) | 2 |" in text
    # paper | claims | replicated | contradicted | inconclusive | n/a | not run yet | underpowered
    assert "| NeuronLLM | 38 | 1 | 0 | 1 | 36 | 35 | 1 |" in text
    assert "| NEG | 34 | 1 | 1 | 0 | 32 | 32 | 0 |" in text
    assert "| **all** | **97** | **2** | **1** | **1** | **93** | **92** | **1** |" in text


def test_repeated_runs_are_compared_and_flagged(run_dir):
    """reruns/<label>/<notebook>/claims.json of another run: the same verdicts are counted, a
    different one is listed with both estimates and flagged run-dependent in the main table."""
    other = run_dir / "reruns" / "cold-2" / "05_neg" / "claims.json"
    write_claims(other, [measured("NG-03", Estimate(0.62, 0.55, 0.7, 8, "prompts")),   # contradicted -> replicated
                         measured("NG-04", Estimate(0.5, 0.44, 0.56, 8, "prompts"))])  # replicated in both
    (other.parent.parent / "note.md").write_text("From an empty cache, same commit.\n")
    text = report.render(run_dir)
    assert "**cold-2** (05_neg): 1 of 2 verdicts the same as in this run. From an empty cache, same commit." in text
    assert "| NG-03 | contradicted: 0.31 [0.28, 0.34] share | replicated: 0.62 [0.55, 0.7] share |" in text
    rows = _rows(text.split("## NeuronLLM")[1])
    assert "run-dependent" in rows["NG-03"][7] and "run-dependent" not in rows["NG-04"][7]
    # a run whose row carries another rule (the estimate defined otherwise then) is listed, not flagged
    import json
    rows_json = json.loads(other.read_text())
    next(r for r in rows_json if r["id"] == "NG-03")["rule"]["estimate"] = "defined otherwise in an older registry"
    other.write_text(json.dumps(rows_json))
    text = report.render(run_dir)
    assert "| NG-03 | contradicted: 0.31 [0.28, 0.34] share | replicated: 0.62 [0.55, 0.7] share (under another rule: not compared) |" in text
    assert "run-dependent" not in _rows(text.split("## NeuronLLM")[1])["NG-03"][7]
    # a claim the other run did not measure (n/a there) is listed, not flagged
    rows_json = [measured("NG-04", Estimate(0.5, 0.44, 0.56, 8, "prompts")), na("NG-03", "not run at that commit")]
    write_claims(other, rows_json)
    text = report.render(run_dir)
    assert "| NG-03 | contradicted: 0.31 [0.28, 0.34] share | n/a: — (n/a in one of the runs: not compared) |" in text
    assert "run-dependent" not in _rows(text.split("## NeuronLLM")[1])["NG-03"][7]
    import shutil
    shutil.rmtree(run_dir / "reruns")
    assert "## Repeated runs" not in report.render(run_dir) and "run-dependent" not in _rows(report.render(run_dir))["NG-03"][7]


def test_forest_plots_place_each_claim_against_its_threshold(run_dir, tmp_path):
    from neuronloc import plots
    found = report.collect(run_dir)
    nl17 = found["NL-17"][1]
    assert plots.standardized(nl17) == pytest.approx((3.14159 / 44.6, 1.5 / 44.6, 4.75 / 44.6))
    ng04 = found["NG-04"][1]  # within [0.4, 0.6]: 1 at the centre, 0 at a bound
    assert plots.standardized(ng04) == pytest.approx((1.0, 0.5, 1.0))
    less = Claim(**{**nl17.__dict__, "rule": {"kind": "less", "threshold": 5.0, "sesoi": 1.0, "effect": 2.0},
                    "verdict": "replicated"})
    assert plots.standardized(less) == pytest.approx(((5 - 3.14159) / 2, (5 - 4.75) / 2, (5 - 1.5) / 2))
    figures = tmp_path / "figs"
    path = report.write_report(run_dir, figures_dir=figures)
    assert (figures / "report_neuronllm.png").exists() and (figures / "report_neg.png").exists()
    assert not (figures / "report_cnl.png").exists()  # nothing measured
    assert "Forest plot: [report_neuronllm](" in path.read_text()


def test_a_notebook_without_a_cache_is_not_called_a_replay(run_dir):
    # 00_quickstart keeps nothing in a Store: 0 entries written is its cold run, not a replay
    assert not report.uses_cache("00_quickstart") and report.uses_cache("03_cnl_erase_enhance")
    assert report.uses_cache("05_neg")  # not a notebook of this repository: as before
    timings = json.loads((run_dir / "timings.json").read_text())
    timings["notebooks"]["00_quickstart"] = {"seconds": 32, "status": "ok", "cache_entries_written": 0, "computed_seconds": None}
    (run_dir / "timings.json").write_text(json.dumps(timings))
    text = report.render(run_dir)
    assert "| 00_quickstart | ok | 32 s | 0 |" in text
    assert "| 05_neg | ok | 2 min 05 s (from its cache; last computing run 11 min 40 s) | 2 |" in text


def test_report_without_timings_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "rules", lambda: RULES)
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
    assert report.main(["--model-slug", "tiny-model", "--results", str(results),
                        "--figures", str(results.parent / "figures" / "tiny-model")]) == 0
    assert (run_dir / "REPORT.md").exists() and (results.parent / "figures" / "tiny-model" / "report_neg.png").exists()
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


def test_run_notebooks_counts_the_cache_entries_a_run_writes(tmp_path):
    """timings.json's `cache_entries_written` (0: the notebook replayed its cache) comes from
    the entries in results/<slug>/cache before and after the run."""
    import importlib.util

    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "run_notebooks.py"
    spec = importlib.util.spec_from_file_location("run_notebooks", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.cache_entries(tmp_path) == 0  # no cache folder yet
    (tmp_path / "cache").mkdir()
    for name in ("a.pt", "b.pt"):
        (tmp_path / "cache" / name).write_bytes(b"x")
    assert module.cache_entries(tmp_path) == 2


def test_below_sesoi_marks_replicated_claims_whose_interval_also_excludes_the_sesoi():
    """greater t: hi < t + sesoi; less t: lo > t - sesoi; only for replicated claims (a boundary
    value is not below); within and n/a never."""
    greater = {"kind": "greater", "threshold": 0.0, "sesoi": 2.0, "unit": "pp"}
    less = {"kind": "less", "threshold": 50.0, "sesoi": 10.0, "unit": "%"}

    def claim(rule, lo, hi):
        est = Estimate((lo + hi) / 2, lo, hi, 10, "questions")
        return Claim("NL-99", "", "", est.value, "pp", [lo, hi], 10, "questions", rule, claims.decide(rule, est))
    assert report.below_sesoi(claim(greater, 0.5, 1.9))
    assert not report.below_sesoi(claim(greater, 0.5, 2.0))  # hi exactly at t + sesoi
    assert claim(greater, -0.5, 1.9).verdict == "contradicted" and not report.below_sesoi(claim(greater, -0.5, 1.9))
    assert report.below_sesoi(claim(less, 41.0, 49.0))
    assert not report.below_sesoi(claim(less, 40.0, 49.0))  # lo exactly at t - sesoi
    assert not report.below_sesoi(claim({"kind": "within", "bounds": [0, 1], "sesoi": 0.0, "unit": ""}, 0.2, 0.3))
    assert not report.below_sesoi(None)
