"""Claims: what a notebook concludes about one claim of a paper, and the registry of all 97.

A claim is decided by library code, never by a notebook cell. Each claim id has a decision
rule fixed before any run (a pre-registration, `rules/<NL|CN|NG>.json` beside this module):

    {"kind": "greater" | "less" | "within" | "exact", "threshold": t  (or "bounds": [a, b]),
     "sesoi": s >= 0, "effect": the paper's effect in `unit`, "unit": "...",
     "estimate": what the number is, "source": where threshold and sesoi come from,
     "tolerance": (exact only)}

A notebook produces an *estimate* only (`Estimate`: value, 95 % interval, n and the unit
resampled), and `decide(rule, estimate)` gives the verdict (ARCHITECTURE.md, Results):

- greater t: replicated iff lo > t; contradicted iff hi < t + sesoi; else inconclusive;
- less t:    replicated iff hi < t; contradicted iff lo > t - sesoi; else inconclusive;
- within [a, b]: replicated iff [lo, hi] is inside [a, b]; contradicted iff they do not meet;
- exact t:   replicated iff |value - t| <= tolerance, else contradicted (arithmetic claims);
- an estimate without an interval (fewer than two units) is inconclusive, except for exact.

    from neuronloc.claims import Estimate, measured, na, write_claims
    write_claims(Path(RESULTS_DIR) / "claims.json", [
        measured("NL-17", Estimate(12.0, 4.1, 19.8, n=120, n_of="questions"), figure=...),
        na("NL-13", "needs two sizes of one model family"),
    ])

`measured` takes claim text, paper value, unit and rule from the registry and the rules, and
the verdict from `decide`; `write_claims` refuses a row whose verdict is not `decide(rule,
estimate)`. Flags: `underpowered` (added by `measured` when the interval's half-width exceeds
the paper's effect), `collapse`, `by construction`, `no interval`.

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
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from .store import write_atomic

REGISTRY_PATH = Path(__file__).with_name("claims_registry.json")
RULES_DIR = Path(__file__).with_name("rules")
VERDICTS = ("replicated", "contradicted", "inconclusive", "n/a")
RULE_KINDS = ("greater", "less", "within", "exact")
FLAGS = ("underpowered", "collapse", "by construction", "no interval", "paper inconsistent")
PAPERS = {"NL": "NeuronLLM", "CN": "CNL", "NG": "NEG"}  # id prefix -> paper (CLAIMS.md §1, §2, §3)


class ClaimError(ValueError):
    """A claim record that breaks the claims.json rules (ARCHITECTURE.md, Results)."""


def _finite(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) and not hasattr(x, "__float__"):
        raise ClaimError(f"{what} must be a number, got {type(x).__name__}")
    return float(x)


@dataclass(frozen=True)
class Estimate:
    """A measured number and its 95 % interval over the independent unit resampled.

    value: the estimate; lo, hi: the interval (nan, nan when there is none: fewer than two
    units); n: how many units (`n_of`: "questions", "facts", "prompts", "repetitions", ...).
    """

    value: float
    lo: float = math.nan
    hi: float = math.nan
    n: int = 0
    n_of: str = ""

    def __post_init__(self):
        for name in ("value", "lo", "hi"):
            object.__setattr__(self, name, _finite(getattr(self, name), f"Estimate.{name}"))
        if not math.isfinite(self.value):
            raise ClaimError(f"Estimate.value must be finite, got {self.value}; use na(id, reason) when there is no number")
        if math.isnan(self.lo) != math.isnan(self.hi):
            raise ClaimError(f"Estimate: give both ends of the interval or neither, got [{self.lo}, {self.hi}]")
        if self.has_interval and not self.lo <= self.hi:
            raise ClaimError(f"Estimate: interval [{self.lo}, {self.hi}] has lo > hi")
        if isinstance(self.n, bool) or int(self.n) != self.n or self.n < 0:
            raise ClaimError(f"Estimate.n must be a count of units, got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def halfwidth(self) -> float:
        return (self.hi - self.lo) / 2 if self.has_interval else math.nan

    @classmethod
    def of(cls, triple, n: int, n_of: str) -> Estimate:
        """From a (value, lo, hi) triple as the `metrics` interval helpers return it."""
        value, lo, hi = triple
        return cls(value, lo, hi, n=n, n_of=n_of)


@lru_cache(maxsize=1)
def rules() -> dict[str, dict]:
    """Every claim's pre-registered decision rule: {id: rule} from rules/*.json."""
    out: dict[str, dict] = {}
    for path in sorted(RULES_DIR.glob("*.json")):
        for id, rule in json.loads(path.read_text(encoding="utf-8")).items():
            if id in out:
                raise ClaimError(f"{path.name}: rule for {id} given twice")
            out[id] = check_rule(rule, id)
    return out


def rule_of(id: str) -> dict:
    registry_entry(id)  # a clear error for an unknown id
    try:
        return rules()[id]
    except KeyError:
        raise ClaimError(f"{id}: no pre-registered rule in {RULES_DIR.name}/{id[:2]}.json") from None


def check_rule(rule: dict, id: str = "?") -> dict:
    """`rule` validated (see the module docstring); returned unchanged."""
    kind = rule.get("kind")
    if kind not in RULE_KINDS:
        raise ClaimError(f"{id}: rule kind {kind!r} is not one of {RULE_KINDS}")
    if kind == "within":
        bounds = rule.get("bounds")
        if not (isinstance(bounds, list) and len(bounds) == 2 and bounds[0] <= bounds[1]):
            raise ClaimError(f"{id}: rule 'within' needs bounds [a, b] with a <= b, got {bounds!r}")
    elif not isinstance(rule.get("threshold"), (int, float)) or isinstance(rule.get("threshold"), bool):
        raise ClaimError(f"{id}: rule {kind!r} needs a numeric threshold, got {rule.get('threshold')!r}")
    sesoi = rule.get("sesoi", 0)
    if not isinstance(sesoi, (int, float)) or sesoi < 0:
        raise ClaimError(f"{id}: rule sesoi must be a number >= 0, got {sesoi!r}")
    if kind == "exact" and not (isinstance(rule.get("tolerance"), (int, float)) and rule["tolerance"] >= 0):
        raise ClaimError(f"{id}: rule 'exact' needs a tolerance >= 0, got {rule.get('tolerance')!r}")
    return rule


def excludes_sesoi(rule: dict, lo: float, hi: float) -> bool:
    """Whether the interval [lo, hi] excludes every effect of at least the rule's sesoi on the
    claimed side of its threshold ("greater": hi < threshold + sesoi; "less": lo > threshold -
    sesoi): what makes `decide` call an interval that is not replicated contradicted. False for
    the other kinds."""
    kind, sesoi = rule["kind"], rule.get("sesoi", 0)
    if kind == "greater":
        return hi < rule["threshold"] + sesoi
    return kind == "less" and lo > rule["threshold"] - sesoi


def decide(rule: dict, estimate: Estimate) -> str:
    """The verdict that `rule` gives on `estimate` (module docstring): "replicated",
    "contradicted" or "inconclusive"."""
    check_rule(rule)
    kind = rule["kind"]
    if kind == "exact":
        return "replicated" if abs(estimate.value - rule["threshold"]) <= rule["tolerance"] else "contradicted"
    if not estimate.has_interval:
        return "inconclusive"
    lo, hi = estimate.lo, estimate.hi
    if kind in ("greater", "less"):
        t = rule["threshold"]
        shown = lo > t if kind == "greater" else hi < t
        return "replicated" if shown else "contradicted" if excludes_sesoi(rule, lo, hi) else "inconclusive"
    a, b = rule["bounds"]
    return "replicated" if a <= lo and hi <= b else "contradicted" if hi < a or lo > b else "inconclusive"


def describe(rule: dict) -> str:
    """The rule in words, for REPORT.md."""
    kind, sesoi, unit = rule["kind"], rule.get("sesoi", 0), rule.get("unit", "")
    u = f" {unit}" if unit else ""
    if kind == "greater":
        return f"CI above {rule['threshold']:g}{u} (contradicted if below {rule['threshold'] + sesoi:g})"
    if kind == "less":
        return f"CI below {rule['threshold']:g}{u} (contradicted if above {rule['threshold'] - sesoi:g})"
    if kind == "within":
        a, b = rule["bounds"]
        return f"CI inside [{a:g}, {b:g}]{u} (contradicted if disjoint)"
    return f"= {rule['threshold']:g}{u} within {rule['tolerance']:g}"


@dataclass(frozen=True)
class Claim:
    """One claim as a notebook measured it (the claims.json record of ARCHITECTURE.md).

    estimate, ci = [lo, hi], n, n_of: the measurement (None, None, 0, "" for "n/a"); rule:
    the pre-registered rule of the id; verdict: `decide(rule, estimate)`, or "n/a" with the
    reason in `note`. `figure` (optional) is stored relative to the claims.json folder.
    Build rows with `measured` and `na` rather than by hand.
    """

    id: str
    claim: str
    paper_value: str
    estimate: float | None
    unit: str
    ci: list | None
    n: int
    n_of: str
    rule: dict
    verdict: str
    flags: list = field(default_factory=list)
    note: str = ""
    figure: str | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ClaimError(f"{self.id}: verdict {self.verdict!r} is not one of {', '.join(map(repr, VERDICTS))}")
        unknown = [f for f in self.flags if f not in FLAGS]
        if unknown:
            raise ClaimError(f"{self.id}: unknown flags {unknown}; known: {FLAGS}")
        object.__setattr__(self, "flags", list(self.flags))
        check_rule(self.rule, self.id)
        if self.verdict == "n/a":
            if not self.note.strip():
                raise ClaimError(f"{self.id}: verdict 'n/a' needs the reason in `note`")
        else:
            if self.estimate is None or self.ci is None:
                raise ClaimError(f"{self.id}: verdict {self.verdict!r} needs an estimate and its interval; "
                                 f"use na(id, reason) when there is no number")
            est = self.as_estimate()
            object.__setattr__(self, "estimate", est.value)
            object.__setattr__(self, "ci", [est.lo, est.hi] if est.has_interval else [None, None])
            expected = decide(self.rule, est)
            if self.verdict != expected:
                raise ClaimError(f"{self.id}: verdict {self.verdict!r} is not what its rule gives on the estimate "
                                 f"({expected!r}); take the verdict from claims.decide")
        if self.figure is not None:
            object.__setattr__(self, "figure", str(self.figure))

    def as_estimate(self) -> Estimate:
        lo, hi = (math.nan if x is None else x for x in self.ci)
        return Estimate(self.estimate, lo, hi, self.n, self.n_of)

    @classmethod
    def from_dict(cls, record: dict) -> Claim:
        known = {f.name for f in fields(cls)}
        unknown = set(record) - known
        if unknown:
            raise ClaimError(f"{record.get('id', '?')}: unknown claims.json fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**record)


def measured(id: str, estimate: Estimate, note: str = "", flags=(), figure=None, claim: str | None = None) -> Claim:
    """The claims.json row of a measured claim: text, paper value, unit and rule from the
    registry and the rules; verdict from `decide`. Adds `underpowered` when the interval's
    half-width exceeds the paper's effect (`rule["effect"]`), `no interval` when there is none.
    claim: the comparison as this notebook measures it (default: the rule's `estimate` text)."""
    entry, rule = registry_entry(id), rule_of(id)
    flags = list(flags)
    if rule["kind"] != "exact":
        if not estimate.has_interval:
            flags.append("no interval")
        elif rule.get("effect") and estimate.halfwidth > abs(rule["effect"]):
            flags.append("underpowered")
    text = claim or rule.get("estimate") or entry["claim"]
    return Claim(id, text, entry["paper_value"], estimate.value, rule.get("unit", ""),
                 [estimate.lo, estimate.hi], estimate.n, estimate.n_of, rule, decide(rule, estimate),
                 flags=list(dict.fromkeys(flags)), note=note, figure=figure)


def na(id: str, reason: str, flags=(), figure=None) -> Claim:
    """A claim this run cannot test: verdict "n/a" with the reason (only where the claim cannot
    be measured on this model, or holds by construction: flags=["by construction"])."""
    entry, rule = registry_entry(id), rule_of(id)
    return Claim(id, entry["claim"], entry["paper_value"], None, rule.get("unit", ""), None, 0, "", rule, "n/a",
                 flags=list(flags), note=reason, figure=figure)


def _protocol_value(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_protocol_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, Iterable):
        return ", ".join(_protocol_value(v) for v in value) or "none"
    return str(value)


def protocol_line(parts: Mapping[str, object]) -> str:
    """One line on what decided a notebook's claims, from the run's own values:
    {"tasks": ["sst2", "emotion"], "read-out": {"sst2": "letter"}, "questions": 204}
    -> "tasks: sst2, emotion; read-out: sst2 letter; questions: 204" (floats as %g, an
    empty list as "none")."""
    return "; ".join(f"{name}: {_protocol_value(value)}" for name, value in parts.items())


def write_claims(path: str | os.PathLike, claims: list[Claim], protocol: str | Mapping | None = None) -> Path:
    """Write `claims` as claims.json at `path` (atomically). Every id must be in the registry,
    with its registered rule and the verdict that rule gives, and no id twice. Figure paths
    are stored relative to the claims.json folder. protocol: what decided these claims (tasks,
    read-outs, sizes) as one line or as a mapping for `protocol_line`, written beside as
    protocol.md for REPORT.md."""
    path = Path(path)
    ids = [c.id for c in claims]
    unknown = [i for i in ids if i not in registry_ids()]
    if unknown:
        raise ClaimError(f"unknown claim ids {unknown}: ids are NL-01..NL-38, CN-01..CN-25, NG-01..NG-34 "
                         f"(neuronloc/claims_registry.json, from CLAIMS.md)")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ClaimError(f"claim ids given more than once: {twice}")
    for claim in claims:
        if claim.rule != rule_of(claim.id):
            raise ClaimError(f"{claim.id}: the row's rule is not the pre-registered one in rules/{claim.id[:2]}.json")
    records = []
    for claim in claims:
        record = asdict(claim)
        if claim.figure is not None:
            record["figure"] = os.path.relpath(Path(claim.figure).resolve(), path.parent.resolve())
        records.append(record)
    _write_json(path, records)
    if isinstance(protocol, Mapping):
        protocol = protocol_line(protocol)
    if protocol is not None:
        write_atomic(path.with_name("protocol.md"), " ".join(protocol.split()) + "\n")
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
