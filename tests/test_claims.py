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


# --------------------------------------------------------------------------- Claim

def test_claim_validates_verdict_ours_and_note():
    Claim("NL-01", "c", "51.4", 3.0, "RAC %", "replicated")
    with pytest.raises(ClaimError, match="verdict"):
        Claim("NL-01", "c", "51.4", 3.0, "RAC %", "yes")
    with pytest.raises(ClaimError, match="reason"):
        Claim("NL-01", "c", "51.4", None, "", "n/a")
    with pytest.raises(ClaimError, match="None"):
        Claim("NL-01", "c", "51.4", None, "", "replicated")
    for bad in (math.nan, math.inf):
        with pytest.raises(ClaimError, match="finite"):
            Claim("NL-01", "c", "51.4", bad, "", "not replicated")
    with pytest.raises(ClaimError, match="number"):
        Claim("NL-01", "c", "51.4", "3", "", "replicated")
    assert type(Claim("NL-01", "c", "v", np.float32(0.5), "", "replicated").ours) is float


def test_na_takes_text_from_the_registry():
    claim = na("NL-13", "needs two sizes of one model family")
    assert claim.verdict == "n/a" and claim.ours is None
    assert claim.claim == claims.registry_entry("NL-13")["claim"]
    with pytest.raises(ClaimError, match="reason"):
        na("NL-13", " ")
    with pytest.raises(ClaimError, match="unknown claim id"):
        na("NL-99", "x")


def test_write_and_read_claims(tmp_path):
    figure = tmp_path / "figures" / "fig.png"
    path = tmp_path / "results" / "01_x" / "claims.json"
    written = [Claim("NL-17", "bad neurons", "44.6", 3.25, "RAC %", "replicated", figure=figure),
               na("NL-13", "one model size")]
    write_claims(path, written)
    records = json.loads(path.read_text())
    assert [r["id"] for r in records] == ["NL-17", "NL-13"]
    assert set(records[0]) == {"id", "claim", "paper_value", "ours", "unit", "verdict", "note", "figure"}
    assert records[0]["figure"] == "../../figures/fig.png"  # relative to the claims.json folder
    back = read_claims(path)
    assert [c.id for c in back] == ["NL-17", "NL-13"] and back[0].ours == 3.25


def test_write_claims_rejects_unknown_and_repeated_ids(tmp_path):
    with pytest.raises(ClaimError, match="unknown claim ids"):
        write_claims(tmp_path / "claims.json", [Claim("NL-39", "c", "v", 1.0, "", "replicated")])
    with pytest.raises(ClaimError, match="more than once"):
        write_claims(tmp_path / "claims.json", [na("NL-13", "a"), na("NL-13", "b")])
    assert not (tmp_path / "claims.json").exists()


def test_read_claims_reports_a_bad_file(tmp_path):
    path = tmp_path / "claims.json"
    path.write_text(json.dumps([{"id": "NL-01", "claim": "c", "paper_value": "v", "ours": 1, "unit": "",
                                 "verdict": "maybe", "note": ""}]))
    with pytest.raises(ClaimError, match="claims.json: NL-01: verdict"):
        read_claims(path)


def test_verdict_reads_the_comparison():
    from neuronloc.claims import verdict
    assert verdict(True) == "replicated" and verdict(False) == "not replicated"
    assert verdict(0.3 > 0.5) == "not replicated"
