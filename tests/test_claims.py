"""Claim records, claims.json and the registry of the 97 claims (parsed once from CLAIMS.md)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from neuronloc import claims
from neuronloc.claims import Claim, ClaimError, na, read_claims, registry, write_claims

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_MD = next((p for p in (ROOT.parent / "shared/docs/CLAIMS.md", Path("/work/shared/docs/CLAIMS.md")) if p.exists()), None)


# --------------------------------------------------------------------------- registry

def test_registry_has_exactly_the_97_ids():
    ids = [e["id"] for e in registry()]
    expected = ([f"NL-{i:02d}" for i in range(1, 39)] + [f"CN-{i:02d}" for i in range(1, 26)]
                + [f"NG-{i:02d}" for i in range(1, 35)])
    assert ids == expected


def test_every_claim_has_its_paper_and_text():
    papers = {"NL": "NeuronLLM", "CN": "CNL", "NG": "NEG"}
    for e in registry():
        assert e["paper"] == papers[e["id"][:2]], e["id"]
        assert e["claim"] and e["paper_value"] and e["criterion"] and e["where"], e["id"]
    counts = {p: sum(e["paper"] == p for e in registry()) for p in papers.values()}
    assert counts == {"NeuronLLM": 38, "CNL": 25, "NEG": 34}  # CLAIMS.md, Counts


def test_registry_spot_checks():
    entry = claims.registry_entry("NL-01")
    assert entry["paper_value"].startswith("Avg Deg RAC/RCC: NeuronLLM 51.4/66.5")
    assert claims.registry_entry("NG-03")["feasibility"] == "OK"
    assert claims.registry_entry("CN-01")["claim"].startswith("CNL locates commonality neurons with 96.42 %")
    # an escaped pipe inside a cell stays in the cell
    assert "|RAC|" in claims.registry_entry("NL-09")["criterion"].replace("\\", "")
    feasibility = [e["feasibility"] for e in registry()]
    assert {c: feasibility.count(c) for c in ("OK", "DEG-MC", "BIG", "CODE")} == {"OK": 30, "DEG-MC": 52, "BIG": 7, "CODE": 8}


def test_registry_records_the_papers_inconsistencies():
    cn16 = claims.registry_entry("CN-16")["inconsistencies"]
    assert any("29.61, not 28.95" in text for text in cn16)
    assert any("variance" in text for text in claims.registry_entry("CN-14")["inconsistencies"])  # named by id
    assert any("−0.429" in text for text in claims.registry_entry("NG-05")["inconsistencies"])
    assert claims.registry_entry("NL-10")["inconsistencies"] == []


@pytest.mark.skipif(CLAIMS_MD is None, reason="CLAIMS.md (../shared/docs) is not beside this checkout")
def test_registry_is_what_claims_md_gives(tmp_path):
    out = tmp_path / "registry.json"
    assert claims.main([str(CLAIMS_MD), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == list(registry()), "run `python -m neuronloc.claims PATH/CLAIMS.md`"


def test_build_registry_rejects_an_unmapped_inconsistency(tmp_path):
    md = tmp_path / "CLAIMS.md"
    md.write_text("| NL-01 | w | c | v | r | n | OK | note | L1 |\n\n## 1.3 Internal inconsistencies\n- A new finding.\n")
    with pytest.raises(ValueError, match="not mapped"):
        claims.build_registry(md)


# --------------------------------------------------------------------------- rules and decide

from neuronloc.claims import Estimate, decide, measured  # noqa: E402

GREATER = {"kind": "greater", "threshold": 0.0, "sesoi": 2.0, "effect": 4.0, "unit": "pp"}
LESS = {"kind": "less", "threshold": 50.0, "sesoi": 10.0, "effect": 20.0, "unit": "%"}
WITHIN = {"kind": "within", "bounds": [0.9, 1.1], "sesoi": 0.0, "unit": "x"}
EXACT = {"kind": "exact", "threshold": 28.95, "tolerance": 0.005, "sesoi": 0.0, "unit": ""}


def est(lo, hi, value=None):
    return Estimate((lo + hi) / 2 if value is None else value, lo, hi, n=10, n_of="questions")


@pytest.mark.parametrize("lo, hi, expected", [
    (0.5, 3.0, "replicated"),       # above t
    (0.0, 3.0, "inconclusive"),     # lo exactly at t is not above it
    (-1.0, 1.9, "contradicted"),    # below t + sesoi = 2
    (-1.0, 2.0, "inconclusive"),    # hi exactly at t + sesoi
    (-5.0, -1.0, "contradicted"),   # the other way
    (0.1, 1.0, "replicated"),       # above t and below t + sesoi: the direction is shown, replicated first
    (-1.0, 5.0, "inconclusive"),
])
def test_decide_greater(lo, hi, expected):
    assert decide(GREATER, est(lo, hi)) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (10.0, 49.9, "replicated"), (10.0, 50.0, "inconclusive"), (40.1, 60.0, "contradicted"),
    (40.0, 60.0, "inconclusive"), (55.0, 70.0, "contradicted"),
])
def test_decide_less(lo, hi, expected):
    assert decide(LESS, est(lo, hi)) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (0.9, 1.1, "replicated"), (0.95, 1.05, "replicated"), (0.8, 1.0, "inconclusive"),
    (1.1, 1.3, "inconclusive"),  # they meet at 1.1
    (1.2, 1.3, "contradicted"), (0.1, 0.89, "contradicted"),
])
def test_decide_within(lo, hi, expected):
    assert decide(WITHIN, est(lo, hi)) == expected


def test_decide_with_zero_sesoi_and_zero_width_intervals():
    rule = {**GREATER, "sesoi": 0.0}
    assert decide(rule, est(0.0, 0.0)) == "inconclusive"  # exactly at t: neither above nor below
    assert decide(rule, est(-0.1, -0.1)) == "contradicted"
    assert decide(rule, est(0.1, 0.1)) == "replicated"
    assert decide(GREATER, est(1.0, 1.0)) == "replicated"  # a point above t (and below t + sesoi)
    assert decide(GREATER, est(0.0, 0.0)) == "contradicted"  # a point at t, below t + sesoi


def test_decide_exact_and_without_an_interval():
    assert decide(EXACT, Estimate(28.954)) == "replicated"
    assert decide(EXACT, Estimate(29.61)) == "contradicted"
    assert decide(GREATER, Estimate(5.0, n=1, n_of="prompts")) == "inconclusive"  # no interval, no verdict


def test_bad_rules_and_estimates_are_refused():
    with pytest.raises(ClaimError, match="kind"):
        decide({"kind": "bigger", "threshold": 0}, est(0, 1))
    with pytest.raises(ClaimError, match="threshold"):
        decide({"kind": "greater"}, est(0, 1))
    with pytest.raises(ClaimError, match="bounds"):
        decide({"kind": "within", "bounds": [2, 1]}, est(0, 1))
    with pytest.raises(ClaimError, match="sesoi"):
        decide({"kind": "less", "threshold": 0, "sesoi": -1}, est(0, 1))
    with pytest.raises(ClaimError, match="tolerance"):
        decide({"kind": "exact", "threshold": 1}, est(0, 1))
    with pytest.raises(ClaimError, match="lo > hi"):
        Estimate(1.0, 2.0, 0.0)
    with pytest.raises(ClaimError, match="both ends"):
        Estimate(1.0, 0.0, math.nan)
    with pytest.raises(ClaimError, match="finite"):
        Estimate(math.nan)
    assert Estimate.of((np.float32(0.5), 0.25, 0.75), 8, "prompts") == Estimate(0.5, 0.25, 0.75, 8, "prompts")


def test_describe_states_the_rule():
    assert claims.describe(GREATER) == "CI above 0 pp (contradicted if below 2)"
    assert claims.describe(LESS) == "CI below 50 % (contradicted if above 40)"
    assert claims.describe(WITHIN) == "CI inside [0.9, 1.1] x (contradicted if disjoint)"
    assert claims.describe(EXACT) == "= 28.95 within 0.005"


def test_every_registered_claim_has_a_valid_rule():
    missing = sorted(claims.registry_ids() - set(claims.rules()))
    assert not missing, f"no pre-registered rule (lib/neuronloc/rules/*.json) for {missing}"
    for id, rule in claims.rules().items():
        assert id in claims.registry_ids(), id
        assert rule.get("source") and rule.get("estimate") and "unit" in rule, f"{id}: rule needs estimate, unit, source"


# --------------------------------------------------------------------------- Claim

@pytest.fixture
def fixed_rules(monkeypatch):
    table = {"NL-01": GREATER, "NL-13": GREATER, "NL-17": GREATER, "CN-16": EXACT}
    monkeypatch.setattr(claims, "rules", lambda: table)
    return table


def test_measured_decides_and_flags(fixed_rules):
    row = measured("NL-17", est(0.5, 3.0, 1.5))
    assert (row.verdict, row.estimate, row.ci, row.n, row.n_of) == ("replicated", 1.5, [0.5, 3.0], 10, "questions")
    assert row.rule == GREATER and row.unit == "pp" and row.flags == []
    assert row.paper_value == claims.registry_entry("NL-17")["paper_value"]
    wide = measured("NL-17", est(-10.0, 10.0))  # half-width 10 > the paper's effect 4
    assert wide.verdict == "inconclusive" and wide.flags == ["underpowered"]
    point = measured("NL-17", Estimate(3.0, n=1, n_of="prompts"))
    assert point.verdict == "inconclusive" and point.flags == ["no interval"] and point.ci == [None, None]
    assert measured("CN-16", Estimate(28.95)).flags == []  # exact: no interval needed
    assert measured("NL-17", est(1.0, 2.0), flags=["collapse"]).flags == ["collapse"]


def test_claim_refuses_a_verdict_its_rule_does_not_give(fixed_rules):
    row = measured("NL-17", est(0.5, 3.0))
    fields = dict(row.__dict__)
    Claim(**fields)
    with pytest.raises(ClaimError, match="not what its rule gives"):
        Claim(**{**fields, "verdict": "inconclusive"})
    with pytest.raises(ClaimError, match="verdict"):
        Claim(**{**fields, "verdict": "not replicated"})
    with pytest.raises(ClaimError, match="needs an estimate"):
        Claim(**{**fields, "estimate": None})
    with pytest.raises(ClaimError, match="flags"):
        Claim(**{**fields, "flags": ["suspicious"]})
    with pytest.raises(ClaimError, match="number"):
        Claim(**{**fields, "estimate": "3"})


def test_na_takes_text_from_the_registry(fixed_rules):
    claim = na("NL-13", "needs two sizes of one model family")
    assert claim.verdict == "n/a" and claim.estimate is None and claim.ci is None
    assert claim.claim == claims.registry_entry("NL-13")["claim"] and claim.rule == GREATER
    assert na("NL-13", "Com = Acc under cloze", flags=["by construction"]).flags == ["by construction"]
    with pytest.raises(ClaimError, match="reason"):
        na("NL-13", " ")
    with pytest.raises(ClaimError, match="unknown claim id"):
        na("NL-99", "x")


def test_write_and_read_claims(tmp_path, fixed_rules):
    figure = tmp_path / "figures" / "fig.png"
    path = tmp_path / "results" / "01_x" / "claims.json"
    written = [measured("NL-17", est(0.5, 3.0, 1.25), figure=figure), na("NL-13", "one model size")]
    write_claims(path, written)
    records = json.loads(path.read_text())
    assert [r["id"] for r in records] == ["NL-17", "NL-13"]
    assert set(records[0]) == {"id", "claim", "paper_value", "estimate", "unit", "ci", "n", "n_of", "rule",
                               "verdict", "flags", "note", "figure"}  # ARCHITECTURE.md, Results
    assert records[0]["figure"] == "../../figures/fig.png"  # relative to the claims.json folder
    back = read_claims(path)
    assert [c.id for c in back] == ["NL-17", "NL-13"] and back[0].estimate == 1.25 and back[0].ci == [0.5, 3.0]
    assert not (path.parent / "protocol.md").exists()
    write_claims(path, written, protocol="commonsense (cloze),\n 600 questions")
    assert (path.parent / "protocol.md").read_text() == "commonsense (cloze), 600 questions\n"


def test_protocol_line_renders_the_runs_values(tmp_path, fixed_rules):
    from neuronloc.claims import protocol_line

    parts = {"tasks": ["sst2", "emotion"], "read-out": {"sst2": "letter", "emotion": "cloze"}, "questions": 204,
             "lr": 1e-4, "sigma": 6.0, "competent": [], "plateau": True, "window": None}
    assert protocol_line(parts) == ("tasks: sst2, emotion; read-out: sst2 letter, emotion cloze; questions: 204; "
                                    "lr: 0.0001; sigma: 6; competent: none; plateau: yes; window: none")
    path = tmp_path / "nb" / "claims.json"
    write_claims(path, [], protocol={"tasks": ("a", "b"), "n": 3})
    assert (path.parent / "protocol.md").read_text() == "tasks: a, b; n: 3\n"


def test_claims_table_one_row_per_shown_claim(fixed_rules):
    from neuronloc.experiments import claims_table

    rows = [measured("NL-17", est(0.5, 3.0, 1.25)), na("NL-13", "one model size"), measured("NL-01", est(1.0, 2.0))]
    frame = claims_table(rows, skip=("NL-01",))
    assert list(frame.index) == ["NL-17", "NL-13"]
    assert list(frame.columns) == ["verdict", "estimate", "lo", "hi", "n", "n of", "unit", "flags"]
    assert frame.loc["NL-17", ["estimate", "lo", "hi"]].tolist() == [1.25, 0.5, 3.0]
    assert frame.loc["NL-17", "verdict"] == rows[0].verdict and frame.loc["NL-13", "verdict"] == "n/a"
    assert frame.loc["NL-13", ["estimate", "lo", "hi"]].isna().all()
    assert claims_table([]).empty


def test_verdicts_markdown_states_each_claims_numbers(fixed_rules):
    from neuronloc.experiments import verdicts_markdown

    rows = [measured("NL-17", est(0.5123, 3.049, 1.2345)), na("NL-13", "one model size"), measured("NL-01", est(1.0, 2.0))]
    text = verdicts_markdown(rows, skip=("NL-01",))
    assert text.startswith(f"**Verdicts of this run** (replicated {rows[0].verdict == 'replicated':d}, ")
    assert "NL-01 left out here" in text and "**NL-01**" not in text
    line = next(l for l in text.splitlines() if l.startswith("- **NL-17**"))
    assert f"This run: 1.2 [0.51, 3] {rows[0].unit}, n = {rows[0].n} {rows[0].n_of}; " in line
    assert line.endswith(f"→ **{rows[0].verdict}**.") and claims.describe(rows[0].rule) in line
    assert "- **NL-13**" in text and "This run: **n/a** — one model size" in text
    counts = {v: sum(c.verdict == v for c in rows[:2]) for v in claims.VERDICTS}
    assert ", ".join(f"{v} {k}" for v, k in counts.items()) in text


def test_write_claims_rejects_unknown_ids_repeats_and_foreign_rules(tmp_path, fixed_rules):
    with pytest.raises(ClaimError, match="unknown claim ids"):
        write_claims(tmp_path / "claims.json", [Claim("NL-39", "c", "v", 1.0, "", [0.5, 2.0], 3, "q", GREATER,
                                                      "replicated")])
    with pytest.raises(ClaimError, match="more than once"):
        write_claims(tmp_path / "claims.json", [na("NL-13", "a"), na("NL-13", "b")])
    own = measured("NL-17", est(0.5, 3.0))
    lenient = Claim(**{**own.__dict__, "rule": {**GREATER, "threshold": -5.0}})  # a rule chosen after the fact
    with pytest.raises(ClaimError, match="pre-registered"):
        write_claims(tmp_path / "claims.json", [lenient])
    assert not (tmp_path / "claims.json").exists()


def test_read_claims_reports_a_bad_file(tmp_path, fixed_rules):
    path = tmp_path / "claims.json"
    record = json.loads(json.dumps(measured("NL-17", est(0.5, 3.0)).__dict__))
    path.write_text(json.dumps([{**record, "verdict": "contradicted"}]))
    with pytest.raises(ClaimError, match="claims.json: NL-17: verdict 'contradicted' is not what its rule gives"):
        read_claims(path)


def test_committed_claims_are_decided_by_their_registered_rules():
    """Every row of every committed claims.json (SCALE=default): an estimate with n and its unit
    resampled, the registered rule, and the verdict `decide` gives (read_claims checks it)."""
    ROOT_RESULTS = ROOT / "results"
    paths = sorted(ROOT_RESULTS.glob("*/[0-9][0-9]_*/claims.json"))
    assert paths, "no committed claims.json under results/<slug>/"
    ids = []
    for path in paths:
        for row in read_claims(path):
            ids.append(row.id)
            assert row.rule == claims.rule_of(row.id), f"{path}: {row.id} carries a rule that is not the registered one"
            if row.verdict != "n/a":
                assert row.estimate is not None and row.n >= 1 and row.n_of, f"{path}: {row.id} lacks n or n_of"
    assert sorted(ids) == sorted(claims.registry_ids()), "every registered claim is a row of exactly one notebook"
