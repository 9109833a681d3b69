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
modules hold what is specific to one notebook's experiment.
"""
from __future__ import annotations

import warnings

import pandas as pd
import torch
import transformers

from .. import plots
from ..attribution import CompletenessWarning


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
