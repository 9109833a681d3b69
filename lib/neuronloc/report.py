"""REPORT.md: every claim of the three papers, paper value vs ours, from the notebooks' claims.json.

    python -m neuronloc.report --model smollm2-135m            # make report
    python -m neuronloc.report --model-slug smollm2-135m --scale smoke

reads `results/<slug>/*/claims.json` (`neuronloc.claims`) and `results/<slug>/timings.json`
(written by scripts/run_notebooks.py) and writes `results/<slug>/REPORT.md`: the counts per
verdict (replicated, contradicted, inconclusive, n/a) per paper; per paper a table of all its
claims (id, claim, paper value, estimate [95 % CI], n (unit), rule in words, verdict, flags,
figure, notes); one forest plot per paper (`figures/<slug>/report_<paper>.png`: each claim's
estimate and interval against its threshold, in units of the paper's effect, coloured by
verdict); at the top the model, scale, seed, commit and wall time. Every one of the 97 registry
ids is listed: one that no notebook has produced yet is "n/a — not run yet".

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

from .claims import PAPERS, VERDICTS, Claim, ClaimError, describe, excludes_sesoi, read_claims, registry

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


def repeated(run_dir: Path, found: dict[str, tuple[str, Claim]]) -> tuple[list[str], set[str]]:
    """The report's "Repeated runs" section and the ids whose verdict differs between runs.

    Each run_dir/reruns/<label>/ holds the claims.json of another run of the notebooks
    (<label>/<notebook>/claims.json, e.g. a second `make reproduce` from an empty cache) and a
    note.md saying when, from which commit and under what load it ran. Every claim of those
    notebooks is compared with this run's: same verdict or not, with both estimates. A claim
    whose other run carries another rule (its estimate or interval defined otherwise, as the
    registry said then) is listed but not flagged: that run measured something else. So is a
    claim that is n/a in one of the two runs (not measured there, e.g. before the notebook ran
    the experiment): there is no second verdict to compare."""
    lines, unstable = [], set()
    for folder in sorted(p for p in (Path(run_dir) / "reruns").glob("*") if p.is_dir()):
        other = collect(folder)
        if not other:
            continue
        note = folder / "note.md"
        notebooks = sorted({nb for nb, _ in other.values()})
        same = [i for i, (_, c) in other.items() if i in found and found[i][1].verdict == c.verdict]
        differ = sorted(i for i in other if i in found and i not in same)
        redefined = {i for i in differ if other[i][1].rule != found[i][1].rule}
        unmeasured = {i for i in differ if "n/a" in (other[i][1].verdict, found[i][1].verdict)} - redefined
        unstable |= set(differ) - redefined - unmeasured
        lines += [f"**{folder.name}** ({', '.join(notebooks)}): {len(same)} of {len(same) + len(differ)} verdicts "
                  f"the same as in this run." + (f" {' '.join(note.read_text(encoding='utf-8').split())}" if note.exists() else ""), ""]
        if differ:
            lines += ["| id | this run | the other run |", "| --- | --- | --- |"]
            lines += [f"| {i} | {found[i][1].verdict}: {_estimate(found[i][1])} | {other[i][1].verdict}: "
                      f"{_estimate(other[i][1])}{' (under another rule: not compared)' if i in redefined else ''}"
                      f"{' (n/a in one of the runs: not compared)' if i in unmeasured else ''} |"
                      for i in differ]
            lines.append("")
    return (["## Repeated runs", ""] + lines if lines else []), unstable


def uses_cache(notebook: str) -> bool:
    """Whether notebook `notebook` (a name under notebooks/) keeps results in a `Store`: for one
    that does not (00), writing no cache entry is not a replay. Unknown notebooks: True."""
    path = ROOT / "notebooks" / f"{notebook}.ipynb"
    return not path.exists() or "Store" in path.read_text(encoding="utf-8")


def number(x, sig: int = 2) -> str:
    """`x` rounded to `sig` significant digits, as text for notes and conclusions (0.98, 1e-05, 120.0)."""
    return str(rounded(float(x), sig))


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


def _num(x) -> str:
    return f"{rounded(x, 3):g}"


def _estimate(claim: Claim) -> str:
    if claim.estimate is None:
        return "—"
    lo, hi = claim.ci
    text = _num(claim.estimate) + (f" [{_num(lo)}, {_num(hi)}]" if lo is not None else " (no interval)")
    return text + (f" {claim.unit}" if claim.unit else "")


def below_sesoi(claim: Claim | None) -> bool:
    """A replicated claim whose interval also excludes every effect of at least the sesoi: the
    direction is shown (replicated first, `claims.decide`), the size is under half the paper's."""
    if claim is None or claim.verdict != "replicated" or claim.ci is None or claim.ci[0] is None:
        return False
    return excludes_sesoi(claim.rule, *claim.ci)


def _flags(claim: Claim | None, entry: dict, unstable: set[str] = frozenset()) -> list[str]:
    flags = list(claim.flags) if claim else []
    if below_sesoi(claim):
        flags.append("below the sesoi")
    if entry["inconsistencies"] and "paper inconsistent" not in flags:
        flags.append("paper inconsistent")
    if entry["id"] in unstable:
        flags.append("run-dependent")
    return flags


def render(run_dir: str | os.PathLike, report_path: str | os.PathLike | None = None,
           figures: dict[str, Path] | None = None) -> str:
    """The text of REPORT.md for the results in `run_dir` (results/<slug>/); figure links are
    relative to `report_path` (default run_dir/REPORT.md). figures: {paper: forest plot path}."""
    run_dir = Path(run_dir)
    report_dir = Path(report_path).resolve().parent if report_path else run_dir.resolve()
    found = collect(run_dir)
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    notebooks = timings.get("notebooks", {})
    unknown = "unknown (no timings.json)"

    def link(path) -> str:
        rel = os.path.relpath(path, report_dir)
        return f"[{Path(path).stem}]({rel})" if Path(path).exists() else f"missing: `{rel}`"

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
    lines += ["", "A verdict is what the claim's pre-registered rule (`lib/neuronloc/rules/`) gives on the 95 % "
              "interval of the estimate (`neuronloc.claims.decide`): **replicated** (the interval is on the "
              "claimed side of the threshold), **contradicted** (it excludes every effect of at least the "
              "smallest effect of interest, half the paper's), **inconclusive** (this run cannot tell), **n/a** "
              "(cannot be measured on this model, or true by construction; the reason is in the notes). "
              "Flags: `underpowered` — the interval's half-width exceeds the paper's effect; `collapse` — an "
              "intervention answered one label for >= 90 % of the questions; `paper inconsistent` — the paper's "
              "own numbers for this claim do not add up (listed under the table); `run-dependent` — another run "
              "of the same notebook gave another verdict (Repeated runs); `below the sesoi` — replicated in "
              "direction, but the interval also excludes the smallest effect of interest: the effect is "
              "smaller than half the paper's.", ""]
    if notebooks:
        lines += ["| notebook | status | wall time | claims |", "| --- | --- | ---: | ---: |"]
        for name, info in sorted(notebooks.items()):
            n_claims = sum(nb == name for nb, _ in found.values())
            replay = info.get("cache_entries_written") == 0 and uses_cache(name)
            computed = info.get("computed_seconds")
            wall = duration(info.get("seconds", 0)) + (
                f" (from its cache; last computing run {duration(computed)})" if replay and computed else
                " (from its cache)" if replay else "")
            lines.append(f"| {name} | {info.get('status', '?')} | {wall} | {n_claims} |")
        lines += ["", "Wall time of each notebook's last run; one that found every result in its cache (`from its "
                  "cache`) takes a fraction of a cold run.", ""]
    protocols = sorted(run_dir.glob("*/protocol.md"))
    if protocols:
        lines += ["What decided each notebook's claims (tasks, read-outs, sizes):", ""]
        lines += [f"- **{p.parent.name}**: {' '.join(p.read_text(encoding='utf-8').split())}" for p in protocols]
        lines.append("")

    # counts per verdict per paper
    rows = {paper: [e for e in registry() if e["paper"] == paper] for paper in PAPERS.values()}
    header = "| paper | claims | " + " | ".join(VERDICTS) + " | of the n/a: not run yet | underpowered |"
    lines += ["## Verdicts", "", header, "|" + " --- |" + " ---: |" * (len(VERDICTS) + 3)]
    totals = [0] * (len(VERDICTS) + 3)
    for paper, entries in rows.items():
        counts = [len(entries)] + [sum(found[e["id"]][1].verdict == v for e in entries if e["id"] in found)
                                   + (v == "n/a") * sum(e["id"] not in found for e in entries) for v in VERDICTS]
        counts.append(sum(e["id"] not in found for e in entries))
        counts.append(sum("underpowered" in found[e["id"]][1].flags for e in entries if e["id"] in found))
        totals = [t + c for t, c in zip(totals, counts)]
        lines.append(f"| {paper} | " + " | ".join(map(str, counts)) + " |")
    lines += ["| **all** | " + " | ".join(f"**{t}**" for t in totals) + " |", ""]
    again, unstable = repeated(run_dir, found)
    lines += again

    for paper, entries in rows.items():
        lines += [f"## {paper}", ""]
        if figures and paper in figures:
            lines += [f"Forest plot: {link(figures[paper])}", ""]
        lines += ["| id | claim | paper value | estimate [95 % CI] | n | rule | verdict | flags | figure | notes |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        flagged = []
        for e in entries:
            notes, c = [], None
            if e["id"] in found:
                notebook, c = found[e["id"]]
                claim, paper_value, estimate, verdict = c.claim, c.paper_value, _estimate(c), c.verdict
                n = f"{c.n} {c.n_of}".strip() if c.estimate is not None else "—"
                rule = describe(c.rule)
                figure = link(c.figure) if c.figure else ""
                notes += [x for x in (c.note, f"({notebook})") if x]
            else:
                claim, paper_value, estimate, verdict, figure, n, rule = (e["claim"], e["paper_value"], "—", NOT_RUN,
                                                                          "", "—", "—")
            if e["inconsistencies"]:
                flagged.append(e)
            lines.append("| " + " | ".join(_cell(x) for x in (e["id"], claim, paper_value, estimate, n, rule, verdict,
                                                             ", ".join(_flags(c, e, unstable)), figure, " ".join(notes))) + " |")
        if flagged:
            lines += ["", f"Inconsistencies in {paper}'s own numbers (CLAIMS.md):", ""]
            lines += [f"- **{e['id']}**: " + " / ".join(e["inconsistencies"]) for e in flagged]
        lines.append("")
    return "\n".join(lines)


def forest_plots(run_dir: str | os.PathLike, figures_dir: str | os.PathLike) -> dict[str, Path]:
    """One forest plot per paper (`plots.verdict_forest`) of the claims in run_dir, saved as
    figures_dir/report_<paper>.png (and .pdf); {paper: png path}. Papers with no measured claim
    get none."""
    from . import plots

    found = collect(run_dir)
    out = {}
    plots.style()
    for paper in PAPERS.values():
        measured = [c for e in registry() if e["paper"] == paper and e["id"] in found
                    for c in [found[e["id"]][1]] if c.estimate is not None]
        if not measured:
            continue
        fig = plots.verdict_forest(measured, title=f"{paper}: estimates against their pre-registered thresholds")
        out[paper] = plots.save(fig, f"report_{paper.lower()}", figures_dir)[0]
    return out


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 figures_dir: str | os.PathLike | None = None) -> Path:
    """REPORT.md for run_dir (default run_dir/REPORT.md), with the forest plots in figures_dir
    (none when figures_dir is None)."""
    out = Path(out) if out else Path(run_dir) / "REPORT.md"
    figures = forest_plots(run_dir, figures_dir) if figures_dir is not None else None
    text = render(run_dir, out, figures)
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
    p.add_argument("--figures", type=Path, help="folder of the forest plots (default figures/[smoke/]<slug>)")
    args = p.parse_args(argv)
    if args.model_slug:
        slug = args.model_slug
    else:
        from .models import slug as model_slug

        slug = model_slug(args.model)
    root = args.results or ROOT / "results" / ("smoke" if args.scale == "smoke" else "")
    run_dir = root / slug
    figures_dir = args.figures or ROOT / "figures" / ("smoke" if args.scale == "smoke" else "") / slug
    if not run_dir.is_dir():
        p.error(f"no results in {run_dir}: run the notebooks first (make reproduce MODEL=... SCALE=...)")
    try:
        out = write_report(run_dir, args.out, figures_dir)
    except ClaimError as err:
        print(f"error: {err}")
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
