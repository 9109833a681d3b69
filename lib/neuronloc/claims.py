"""Claims: what a notebook concludes about one claim of a paper, and the registry of all 97.

A notebook ends with the claims it tested, written to `results/<slug>/<NN_notebook>/claims.json`
(ARCHITECTURE.md, Results): a JSON list of `Claim` objects. `neuronloc.report` collects them
into `results/<slug>/REPORT.md`.

    from neuronloc.claims import Claim, na, write_claims
    write_claims(Path(RESULTS_DIR) / "claims.json", [
        Claim("NL-17", "exciting the bottom-K ACE neurons lowers Acc more than K random ones",
              paper_value="Deg RAC 44.6", ours=3.1, unit="RAC %", verdict="replicated",
              figure=Path(FIGURES_DIR) / "03_bad_neurons.png"),
        na("NL-13", "needs two sizes of one model family"),
    ])

The registry (`registry()`, the committed file `claims_registry.json` beside this module)
lists every claim id of the replication checklist (`../shared/docs/CLAIMS.md`) with its paper,
claim text, paper value, the comparison that decides it, its feasibility class on the
embedded model, and the inconsistencies of the paper's own numbers that the checklist found.
It was parsed once from CLAIMS.md; `python -m neuronloc.claims PATH/TO/CLAIMS.md` regenerates it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

from .store import write_atomic

REGISTRY_PATH = Path(__file__).with_name("claims_registry.json")
VERDICTS = ("replicated", "not replicated", "n/a")
PAPERS = {"NL": "NeuronLLM", "CN": "CNL", "NG": "NEG"}  # id prefix -> paper (CLAIMS.md §1, §2, §3)


class ClaimError(ValueError):
    """A claim record that breaks the claims.json rules (ARCHITECTURE.md, Results)."""


@dataclass(frozen=True)
class Claim:
    """One claim as a notebook measured it (the claims.json record of ARCHITECTURE.md).

    `claim` states the comparison that decides the verdict (the embedded model is not the
    paper's, so claims are about direction or shape); `ours` is a finite number, or None with
    verdict "n/a"; "n/a" needs the reason in `note`. `figure` (optional) is the figure that
    shows the result; `write_claims` stores it relative to the claims.json folder.
    """

    id: str
    claim: str
    paper_value: str
    ours: float | None
    unit: str
    verdict: str
    note: str = ""
    figure: str | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ClaimError(f"{self.id}: verdict {self.verdict!r} is not one of {', '.join(map(repr, VERDICTS))}")
        if self.verdict == "n/a" and not self.note.strip():
            raise ClaimError(f"{self.id}: verdict 'n/a' needs the reason in `note`")
        if self.ours is None:
            if self.verdict != "n/a":
                raise ClaimError(f"{self.id}: `ours` is None, which only verdict 'n/a' allows; give the measured number")
        else:
            if isinstance(self.ours, bool) or not isinstance(self.ours, (int, float)) and not hasattr(self.ours, "__float__"):
                raise ClaimError(f"{self.id}: `ours` must be a number, got {type(self.ours).__name__}")
            value = float(self.ours)  # numpy / torch scalars become plain floats
            if not math.isfinite(value):
                raise ClaimError(f"{self.id}: `ours` must be finite, got {value}; use na(id, reason) when there is no number")
            object.__setattr__(self, "ours", value)
        if self.figure is not None:
            object.__setattr__(self, "figure", str(self.figure))

    @classmethod
    def from_dict(cls, record: dict) -> Claim:
        known = {f.name for f in fields(cls)}
        unknown = set(record) - known
        if unknown:
            raise ClaimError(f"{record.get('id', '?')}: unknown claims.json fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**record)


def na(id: str, reason: str, ours: float | None = None, unit: str = "") -> Claim:
    """A claim this run cannot test: verdict "n/a" with the reason; claim text and paper value
    come from the registry."""
    entry = registry_entry(id)
    return Claim(id, entry["claim"], entry["paper_value"], ours, unit, "n/a", note=reason)


def verdict(holds: bool) -> str:
    """A claim's verdict from its comparison: "replicated" if it holds, else "not replicated"."""
    return "replicated" if holds else "not replicated"


def write_claims(path: str | os.PathLike, claims: list[Claim]) -> Path:
    """Write `claims` as claims.json at `path` (atomically). Every id must be in the registry,
    and no id twice. Figure paths are stored relative to the claims.json folder."""
    path = Path(path)
    ids = [c.id for c in claims]
    unknown = [i for i in ids if i not in registry_ids()]
    if unknown:
        raise ClaimError(f"unknown claim ids {unknown}: ids are NL-01..NL-38, CN-01..CN-25, NG-01..NG-34 "
                         f"(neuronloc/claims_registry.json, from CLAIMS.md)")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ClaimError(f"claim ids given more than once: {twice}")
    records = []
    for claim in claims:
        record = asdict(claim)
        if claim.figure is not None:
            record["figure"] = os.path.relpath(Path(claim.figure).resolve(), path.parent.resolve())
        records.append(record)
    _write_json(path, records)
    return path


def read_claims(path: str | os.PathLike) -> list[Claim]:
    """The claims of one claims.json (validated as `write_claims` does)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ClaimError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(records, list):
        raise ClaimError(f"{path}: claims.json must be a JSON list of claim objects")
    try:
        claims = [Claim.from_dict(r) for r in records]
    except (ClaimError, TypeError) as err:
        raise ClaimError(f"{path}: {err}") from err
    ids = [c.id for c in claims]
    bad = [i for i in ids if i not in registry_ids()] + sorted({i for i in ids if ids.count(i) > 1})
    if bad:
        raise ClaimError(f"{path}: unknown or repeated claim ids {bad}")
    return claims


def _write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- registry

@lru_cache(maxsize=1)
def registry() -> tuple[dict, ...]:
    """Every claim of CLAIMS.md, in id order: {"id", "paper", "where", "claim", "paper_value",
    "criterion", "feasibility", "note", "inconsistencies": [...]}."""
    return tuple(json.loads(REGISTRY_PATH.read_text(encoding="utf-8")))


@lru_cache(maxsize=1)
def registry_ids() -> frozenset[str]:
    return frozenset(e["id"] for e in registry())


def registry_entry(id: str) -> dict:
    for entry in registry():
        if entry["id"] == id:
            return entry
    raise ClaimError(f"unknown claim id {id!r}: ids are NL-01..NL-38, CN-01..CN-25, NG-01..NG-34")


# CLAIMS.md's "Internal inconsistencies" bullets -> the claims whose paper values they concern.
# Ids a bullet names itself are added automatically. None: a bullet that is a consistency
# check or concerns no claim. A bullet missing here is an error: decide when CLAIMS.md changes.
_INCONSISTENCY_IDS = {
    "Tab 1 averages with all four task cells": ["NL-05", "NL-18"],
    "Averages that include 'Fail' cells": ["NL-01", "NL-05"],
    "'Across all tasks' (§4.5)": [],
    "Identical cells 47.2/59.6": ["NL-03", "NL-16", "NL-20"],
    "LLaMA 2-7B Com is 50 %": ["NL-01", "NL-02", "NL-19"],
    "Tab 8 uses 500 and 1,200 neurons": ["NL-30"],
    "Intro fidelity numbers": ["CN-02", "CN-03", "CN-04", "CN-05", "CN-25"],
    "Tab 2 Llama2-7B σ=6 'W/o located' epoch 1": ["CN-15", "CN-16"],
    "Tab 1: IoU = o/(2 − o)": None,  # a consistency check
    "§3.2 percentages sum": ["CN-06", "CN-07"],
    "Eq. 8 uses variance": [],
    "App A says only GPT-2": ["CN-17", "CN-24"],
    "GSM8K accuracies": ["CN-15", "CN-18", "CN-21"],
    "§3.1 'average r = −0.429'": ["NG-05"],
    "Fig 6 legend averages are recomputable": None,  # a consistency check
    "'LM-Prob consistently outperforms": ["NG-15"],
    "Tree-Probe scores exactly 1.000": ["NG-17", "NG-18", "NG-19"],
    "Tab 4 (optimal sizes)": ["NG-24"],
    "Tab 6 gives Llama3.2-3B": None,  # an architecture table, no claim
    "Tab 7 lists CSQA with 4 choices": ["NG-18", "NG-34"],
    "NeurGrad MAE is not the lowest": ["NG-08"],
    "Repo note (xzhao-tkl/NEG": None,  # the reference code, not the paper's numbers
}
_ID = re.compile(r"\b(NL|CN|NG)-\d\d\b")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in _CELL_SPLIT.split(line.strip())[1:-1]]


def build_registry(claims_md: str | os.PathLike) -> list[dict]:
    """Parse CLAIMS.md: every claims-table row (`| NL-01 | where | claim | paper value |
    replicates if | needs | class | note | row |`) and the inconsistency bullets."""
    text = Path(claims_md).read_text(encoding="utf-8")
    entries: dict[str, dict] = {}
    for line in text.splitlines():
        if not re.match(r"\|\s*(NL|CN|NG)-\d\d\s*\|", line):
            continue
        cells = _cells(line)
        if len(cells) != 9:
            raise ValueError(f"{claims_md}: claims row with {len(cells)} cells, expected 9: {line[:80]}")
        id, where, claim, paper_value, criterion, _needs, feasibility, note, _row = cells
        if id in entries:
            raise ValueError(f"{claims_md}: claim {id} appears twice")
        entries[id] = {"id": id, "paper": PAPERS[id[:2]], "where": where, "claim": claim,
                       "paper_value": paper_value, "criterion": criterion, "feasibility": feasibility,
                       "note": note, "inconsistencies": []}

    # bullets (with their continuation lines) under "## x.3 Internal inconsistencies ..."
    bullets, section = [], False
    for line in text.splitlines():
        if line.startswith("#"):
            section = "inconsistencies" in line.lower()
        elif section and line.startswith("- "):
            bullets.append(line[2:].strip())
        elif section and line.startswith("  ") and bullets:
            bullets[-1] += " " + line.strip()
    for bullet in bullets:
        keys = [k for k in _INCONSISTENCY_IDS if bullet.startswith(k)]
        if len(keys) != 1:
            raise ValueError(f"{claims_md}: inconsistency bullet not mapped to claims in "
                             f"neuronloc.claims._INCONSISTENCY_IDS: {bullet[:80]!r}")
        ids = _INCONSISTENCY_IDS[keys[0]]
        if ids is None:
            continue
        for id in sorted(set(ids) | {m.group(0) for m in _ID.finditer(bullet)}):
            entries[id]["inconsistencies"].append(bullet)
    return [entries[i] for i in sorted(entries, key=lambda i: (list(PAPERS).index(i[:2]), i))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Regenerate neuronloc/claims_registry.json from CLAIMS.md.")
    p.add_argument("claims_md", type=Path, help="path of CLAIMS.md (e.g. ../shared/docs/CLAIMS.md)")
    p.add_argument("--out", type=Path, default=REGISTRY_PATH, help=f"output (default {REGISTRY_PATH.name} in the package)")
    args = p.parse_args(argv)
    entries = build_registry(args.claims_md)
    _write_json(args.out, entries)
    counts = {paper: sum(e["paper"] == paper for e in entries) for paper in PAPERS.values()}
    print(f"{len(entries)} claims ({', '.join(f'{k} {v}' for k, v in counts.items())}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
