"""What the numbered notebooks run, one module per notebook: the loops, tables and claim
verdicts behind each paper's experiments, so that a notebook cell only calls the library
and shows the result (README, "Keep notebooks thin").

  fidelity       01: CNL §3, fidelity and reliability of KN, causal tracing, circuits
  decoupling     02: CNL §4, a+b vs Python for a+b
  cnl            03: CNL §5, sigma-masks, erase, enhance, the method table
  linearity      04: NEG §2-4, linearity and NeurGrad
  skill_probes   05: NEG §5-6, skill-neuron probes on MCEval8K
  neuronllm      06: NeuronLLM, good and bad neurons, Tables 1-8
  cross_method   07: every localizer on one model under one protocol

General pieces (metrics, interventions, localizers) stay in their own modules; these
modules hold what is specific to one notebook's experiment. Shared by every notebook:

  setup          the setup cell: seed, figure style, quiet and stable output (nbval)
  claims_table   a notebook's claims as the frame it prints
  verdicts_markdown  the claims in words, every number from the rows (a notebook's last cell)
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import pandas as pd
import torch
import transformers

from .. import plots
from ..attribution import CompletenessWarning
from ..claims import VERDICTS, Claim, describe, registry_entry
from ..report import rounded


def setup(seed: int) -> None:
    """What every notebook's setup cell does: seed torch, one figure style, pandas printing
    `rounded()` values as they are (0.98, 0.016, 13), and nothing on stdout or stderr that
    varies between runs or machines (nbval compares both): no load-time transformers warnings
    or bars, no `CompletenessWarning` (IG's completeness gaps stay in
    `NeuronScores.meta["completeness"]`; 00_quickstart lists the layers that miss). Every
    other warning still shows.

    tqdm's "IProgress not found" notice (ipywidgets missing: text bars, which are fine) comes
    when tqdm.auto is first imported, before this runs: the cell filters it above its imports."""
    warnings.filterwarnings("ignore", category=CompletenessWarning)
    torch.manual_seed(seed)
    plots.style()
    pd.set_option("display.float_format", "{:g}".format)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def claims_table(rows: Sequence[Claim], skip: Sequence[str] = ()) -> pd.DataFrame:
    """A notebook's claims as the frame it prints (through `report.rounded`): per id the
    verdict, estimate, 95 % interval (lo, hi; NaN for n/a), n, what n counts, unit and flags.
    `skip`: ids left out of the print (wall-time claims, NG-09 and NL-36, whose values vary
    between runs where nbval compares the output); claims.json keeps them."""
    def bound(c, i):
        return c.ci[i] if c.ci and c.ci[i] is not None else float("nan")

    return pd.DataFrame([{"id": c.id, "verdict": c.verdict, "estimate": float("nan") if c.estimate is None else c.estimate,
                          "lo": bound(c, 0), "hi": bound(c, 1), "n": c.n, "n of": c.n_of, "unit": c.unit,
                          "flags": ", ".join(c.flags)} for c in rows if c.id not in skip],
                        columns=["id", "verdict", "estimate", "lo", "hi", "n", "n of", "unit", "flags"]).set_index("id")


def sig(value) -> str:
    """`value` at two significant digits as text ("nan" if not finite): nbval compares the
    committed outputs, and two digits do not flip under other CPUs (`report.rounded`)."""
    value = float(value)
    return "nan" if not math.isfinite(value) else f"{rounded(value):g}"


def verdicts_markdown(rows: Sequence[Claim], skip: Sequence[str] = ()) -> str:
    """A notebook's claims in words (its conclusions cell): the count per verdict, then per
    claim what the paper says and its value, this run's estimate with its 95 % interval and
    n, the registered rule in words and the verdict it gives, or the reason for n/a. Every
    number comes from `rows` (two significant digits); `skip`: ids left out (wall times)."""
    shown = [c for c in rows if c.id not in skip]
    counts = ", ".join(f"{v} {sum(c.verdict == v for c in shown)}" for v in VERDICTS)
    lines = [f"**Verdicts of this run** ({counts}; each decided by its pre-registered rule on the 95 % interval"
             + (f"; {', '.join(skip)} left out here, see claims.json" if any(c.id in skip for c in rows) else "") + "):", ""]
    for c in shown:
        paper = f"- **{c.id}** — the paper: {registry_entry(c.id)['claim']} ({c.paper_value})."
        if c.verdict == "n/a":
            lines.append(f"{paper} This run: **n/a** — {c.note}")
            continue
        interval = f" [{sig(c.ci[0])}, {sig(c.ci[1])}]" if c.ci and c.ci[0] is not None else " (no interval)"
        flags = f" ({', '.join(c.flags)})" if c.flags else ""
        lines.append(f"{paper} This run: {sig(c.estimate)}{interval} {c.unit}, n = {c.n} {c.n_of}; "
                     f"rule: {describe(c.rule)} → **{c.verdict}**{flags}.")
    return "\n".join(lines)
