"""REPORT.md: every claim of the three papers, paper value vs ours, from the notebooks' claims.json.

    python -m neuronloc.report --model smollm2-135m            # make report
    python -m neuronloc.report --model-slug smollm2-135m --scale smoke

reads `results/<slug>/*/claims.json` (`neuronloc.claims`) and `results/<slug>/timings.json`
(written by scripts/run_notebooks.py) and writes `results/<slug>/REPORT.md`: per paper, a
table of all its claims (id, claim, paper value, ours, verdict, figure, notes) and the counts
per verdict; at the top the model, scale, seed, commit and wall time. Every one of the 97
registry ids is listed: one that no notebook has produced yet is "n/a — not run yet".

`rounded(x, sig=2)` is the rounding for numbers that are shown: in REPORT.md and in the
notebooks' compared outputs (README, "Print results rounded").
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
from dataclasses import replace
from pathlib import Path

from .claims import PAPERS, VERDICTS, Claim, ClaimError, read_claims, registry

ROOT = Path(__file__).resolve().parents[2]  # the repository (lib/neuronloc/report.py)
NOT_RUN = "n/a — not run yet"


def rounded(values, sig: int = 2):
    """`values` rounded to `sig` significant digits: a number, a numpy array or a pandas
    Series/DataFrame (float entries only). Two digits cannot flip under the last-bit noise
    of another CPU or thread count except for a value within ~1e-5 of a rounding boundary
    (probability ~1e-3 per number), so notebooks print compared numbers through it."""
    import numpy as np

    def one(v):
        if isinstance(v, (bool, np.bool_, int, np.integer)) or not isinstance(v, (float, np.floating)):
            return v
        if v == 0 or not math.isfinite(v):
            return float(v)
        return round(float(v), sig - 1 - math.floor(math.log10(abs(v))))

    if hasattr(values, "map") and hasattr(values, "dtypes"):  # pandas
        import pandas as pd

        if isinstance(values, pd.DataFrame):
            out = values.copy()
            for col in out.columns:
                if pd.api.types.is_float_dtype(out[col]):
                    out[col] = out[col].map(one)
            return out
        return values.map(one) if pd.api.types.is_float_dtype(values) else values
    if isinstance(values, np.ndarray):
        return np.vectorize(one, otypes=[float])(values) if values.dtype.kind == "f" else values
    if hasattr(values, "item") and getattr(values, "ndim", 1) == 0:  # numpy / torch scalar
        values = values.item()
    return one(values)


def collect(run_dir: Path) -> dict[str, tuple[str, Claim]]:
    """{claim id: (notebook, Claim)} over run_dir/*/claims.json; an id from two notebooks is an error."""
    found: dict[str, tuple[str, Claim]] = {}
    for path in sorted(Path(run_dir).glob("*/claims.json")):
        notebook = path.parent.name
        for claim in read_claims(path):
            if claim.id in found:
                raise ClaimError(f"claim {claim.id} is in {found[claim.id][0]}/claims.json and {notebook}/claims.json; "
                                 f"one notebook owns each claim")
            if claim.figure is not None:  # stored relative to the claims.json folder
                claim = replace(claim, figure=str((path.parent / claim.figure).resolve()))
            found[claim.id] = (notebook, claim)
    return found


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s" if m else f"{s} s"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _ours(claim: Claim) -> str:
    if claim.ours is None:
        return "—"
    return f"{rounded(claim.ours, 3):g}" + (f" {claim.unit}" if claim.unit else "")


def render(run_dir: str | os.PathLike, report_path: str | os.PathLike | None = None) -> str:
    """The text of REPORT.md for the results in `run_dir` (results/<slug>/); figure links are
    relative to `report_path` (default run_dir/REPORT.md)."""
    run_dir = Path(run_dir)
    report_dir = Path(report_path).resolve().parent if report_path else run_dir.resolve()
    found = collect(run_dir)
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    notebooks = timings.get("notebooks", {})
    unknown = "unknown (no timings.json)"

    lines = [f"# Replication report: {run_dir.name}", ""]
    env = timings.get("environment", {})
    lines += [
        f"- model: `{timings.get('model', unknown)}`",
        f"- scale: `{timings.get('scale', unknown)}`, seed: `{timings.get('seed', unknown)}`",
        f"- commit: `{commit()}`",
        f"- wall time: {duration(sum(n.get('seconds', 0) for n in notebooks.values())) if notebooks else unknown}"
        + (f" ({len(notebooks)} notebooks)" if notebooks else ""),
    ]
    if env:
        lines.append(f"- environment: {', '.join(f'{k} {v}' for k, v in env.items())}")
    lines.append("")
    if notebooks:
        lines += ["| notebook | status | wall time | claims |", "| --- | --- | ---: | ---: |"]
        for name, info in sorted(notebooks.items()):
            n_claims = sum(nb == name for nb, _ in found.values())
            lines.append(f"| {name} | {info.get('status', '?')} | {duration(info.get('seconds', 0))} | {n_claims} |")
        lines.append("")

    # counts per verdict per paper
    rows = {paper: [e for e in registry() if e["paper"] == paper] for paper in PAPERS.values()}
    header = "| paper | claims | " + " | ".join(VERDICTS) + " | of the n/a: not run yet |"
    lines += ["## Verdicts", "", header, "|" + " --- |" + " ---: |" * (len(VERDICTS) + 2)]
    totals = [0] * (len(VERDICTS) + 2)
    for paper, entries in rows.items():
        counts = [len(entries)] + [sum(found[e["id"]][1].verdict == v for e in entries if e["id"] in found)
                                   + (v == "n/a") * sum(e["id"] not in found for e in entries) for v in VERDICTS]
        counts.append(sum(e["id"] not in found for e in entries))
        totals = [t + c for t, c in zip(totals, counts)]
        lines.append(f"| {paper} | " + " | ".join(map(str, counts)) + " |")
    lines += ["| **all** | " + " | ".join(f"**{t}**" for t in totals) + " |", ""]

    for paper, entries in rows.items():
        lines += [f"## {paper}", "",
                  "| id | claim | paper value | ours | verdict | figure | notes |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        flagged = []
        for e in entries:
            notes = []
            if e["id"] in found:
                notebook, c = found[e["id"]]
                claim, paper_value, ours, verdict = c.claim, c.paper_value, _ours(c), c.verdict
                figure = ""
                if c.figure:
                    rel = os.path.relpath(c.figure, report_dir)
                    figure = f"[{Path(c.figure).stem}]({rel})" if Path(c.figure).exists() else f"missing: `{rel}`"
                notes += [n for n in (c.note, f"({notebook})") if n]
            else:
                claim, paper_value, ours, verdict, figure = e["claim"], e["paper_value"], "—", NOT_RUN, ""
            if e["inconsistencies"]:
                flagged.append(e)
                notes.append("⚠ the paper's own numbers are inconsistent (below)")
            lines.append("| " + " | ".join(_cell(x) for x in (e["id"], claim, paper_value, ours, verdict, figure,
                                                             " ".join(notes))) + " |")
        if flagged:
            lines += ["", f"Inconsistencies in {paper}'s own numbers (CLAIMS.md):", ""]
            lines += [f"- **{e['id']}**: " + " / ".join(e["inconsistencies"]) for e in flagged]
        lines.append("")
    return "\n".join(lines)


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    out = Path(out) if out else Path(run_dir) / "REPORT.md"
    text = render(run_dir, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Render results/<slug>/REPORT.md from the notebooks' claims.json.")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--model", default="smollm2-135m", help="model name, path or HF id (its slug names the folder)")
    who.add_argument("--model-slug", help="the results folder name, e.g. smollm2-135m")
    p.add_argument("--scale", default="default",
                   help="smoke reads results/smoke/ (as run_notebooks.py writes it); default and paper read results/")
    p.add_argument("--results", type=Path, help="results root (overrides --scale's choice)")
    p.add_argument("--out", type=Path, help="output file (default <results>/<slug>/REPORT.md)")
    args = p.parse_args(argv)
    if args.model_slug:
        slug = args.model_slug
    else:
        from .models import slug as model_slug

        slug = model_slug(args.model)
    root = args.results or ROOT / "results" / ("smoke" if args.scale == "smoke" else "")
    run_dir = root / slug
    if not run_dir.is_dir():
        p.error(f"no results in {run_dir}: run the notebooks first (make reproduce MODEL=... SCALE=...)")
    try:
        out = write_report(run_dir, args.out)
    except ClaimError as err:
        print(f"error: {err}")
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
