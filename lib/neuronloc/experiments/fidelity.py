"""Notebook 01, CNL §3: fidelity of KN, causal tracing and knowledge circuits across the
paraphrases of one fact (§3.1), KN's double/zero validation (§3.2) and the fidelity claims.

From the per-prompt localizations of `localization.validation.localize` (`located`:
`[fact][wording]` of `Localized`):
  fidelity_sets     each method's located sets `[fact][wording]` and the size of its universe
  fidelity_table    CNL Eq. 9 overlap of the paraphrases of one fact, of different facts, of random sets
  fidelity_summary  that table as the notebook shows it: one row per method, with the 95 % interval
  fact_overlaps     each method's paraphrase overlap per fact (the unit the claims resample)
  sized_circuit     a circuit cut to a share of the model's parameters (the paper's 1-3 %)
and KN's own validation (KN, Dai et al. 2022), re-run by CNL §3.2:
  activation_test   P(answer) with the located neurons doubled / zeroed, and as many random ones
  double_zero_table the share of prompts whose P(answer) rises / falls under each edit
and the notebook's verdicts:
  edit_layers       the layers ROME edits: every layer where an edit at the subject can act
  traced_vs_other   ROME success at the traced layer vs the other edited layers, per fact
  claims            the rows of CN-02..09 (`neuronloc.claims.measured`), intervals over facts
"""
from __future__ import annotations

import os
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..claims import Claim, Estimate, measured
from ..hooks import excite, silence
from ..localization import Circuit, Fact, Node
from ..localization.validation import Localized, answer_prob
from ..models import LM
from ..neurons import to_layer_dict
from ..report import rounded
from ..sites import Site

PARAPHRASES, DIFFERENT, RANDOM = "paraphrases of one fact", "different facts", "random sets"
CONDITIONS = ("double located", "double random", "zero located", "zero random")
SIZED = "circuit, 1-3 % of parameters"  # the knowledge circuit the claims use (issue 22: the paper's size)


def node_ids(nodes: Sequence[Node], n_heads: int) -> list[int]:
    """One integer per circuit node: layer x (n_heads + 1) + head, the MLP as head n_heads
    (with SmolLM2's 9 heads: layer x 10 + head, 9 = the MLP)."""
    return [n.layer * (n_heads + 1) + (n_heads if n.head is None else n.head) for n in nodes]


def fidelity_sets(located: Sequence[Sequence[Localized]], site: Site, sparse: int,
                  sized=None) -> dict[str, tuple[list, int]]:
    """{method: (located sets `[fact][wording]` of ids, number of units the sets are drawn
    from)}: KN neurons (of `site`'s n_neurons), causal tracing's top layers (of n_layers), the
    knowledge circuit's nodes and its `sparse` nodes of largest |score| (of the model's heads
    + MLPs); with `sized` (a function Circuit -> nodes, e.g. `sized_circuit`), also
    SIZED: the circuit cut to the paper's share of the parameters."""
    circuit = located[0][0].circuit
    n_heads, n_nodes = circuit.heads.shape[1], circuit.n_nodes

    def each(get):
        return [[get(loc) for loc in fs] for fs in located]
    return {"KN": (each(lambda loc: loc.kn.tolist()), site.n_neurons),
            "causal tracing": (each(lambda loc: loc.layers), site.n_layers),
            "knowledge circuit": (each(lambda loc: node_ids(loc.circuit.nodes, n_heads)), n_nodes),
            f"circuit, top {sparse} nodes": (each(lambda loc: node_ids(loc.circuit.top(sparse), n_heads)), n_nodes),
            **({SIZED: (each(lambda loc: node_ids(sized(loc.circuit), n_heads)), n_nodes)} if sized else {})}


def fidelity_table(sets: dict[str, tuple[list, int]], n_resamples: int, seed: int) -> pd.DataFrame:
    """Rows {method, comparison, overlap, lo, hi}, three per method of `sets` (`fidelity_sets`),
    all CNL Eq. 9 `metrics.overlap`:
      paraphrases of one fact: mean over facts of the mean over a fact's wording pairs, with
        its 95 % bootstrap interval over facts (`metrics.mean_ci`, n_resamples, seed);
      different facts: mean over pairs of facts of the overlap of their j-th wordings (the same
        pattern filled with two facts; pairs with an empty set left out);
      random sets: mean over the wording pairs with non-empty sets of the closed form
        (|A| + |B|) / (2N) of random sets of the same sizes out of the N units."""
    rows = []
    for m, (by_fact, universe) in sets.items():
        mean, lo, hi = metrics.mean_ci([metrics.pairwise_overlap(s) for s in by_fact], n_resamples=n_resamples, seed=seed)
        rows.append({"method": m, "comparison": PARAPHRASES, "overlap": mean, "lo": lo, "hi": hi})
        other = [metrics.overlap(a[j], b[j]) for a, b in combinations(by_fact, 2) for j in range(len(a))]
        rows.append({"method": m, "comparison": DIFFERENT, "overlap": np.nanmean(other), "lo": np.nan, "hi": np.nan})
        chance = [metrics.random_overlap(len(a), len(b), universe) for s in by_fact
                  for a, b in combinations(s, 2) if len(a) and len(b)]
        rows.append({"method": m, "comparison": RANDOM, "overlap": np.mean(chance), "lo": np.nan, "hi": np.nan})
    return pd.DataFrame(rows)


def fidelity_summary(fidelity: pd.DataFrame) -> pd.DataFrame:
    """`fidelity_table` as shown: a row per method (in the table's order), columns the three
    comparisons' overlaps and, after the first, the paraphrase overlap's "lo-hi" interval (rounded)."""
    methods = list(dict.fromkeys(fidelity.method))
    table = fidelity.pivot(index="method", columns="comparison", values="overlap")[[PARAPHRASES, DIFFERENT, RANDOM]].loc[methods]
    ci = fidelity[fidelity.comparison == PARAPHRASES].set_index("method").loc[methods, ["lo", "hi"]].values
    table.insert(1, "95% CI", [f"{rounded(lo)}-{rounded(hi)}" for lo, hi in ci])
    return table


def activation_test(lm: LM, facts: Sequence[Fact], kn_sets: Sequence, seed: int) -> pd.DataFrame:
    """KN's validation: a row per fact with a non-empty located set (flat ids of `lm.site()`):
    p = P(answer's first token) (`answer_prob`), n = the set's size, and P under "double" /
    "zero" of the "located" neurons and of as many "random" ones (drawn uniformly, a new
    draw per fact from one generator seeded with `seed`), edited at the last position."""
    site = lm.site()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for fact, kn in zip(facts, kn_sets):
        if not len(kn):
            continue
        rand = torch.randperm(site.n_neurons, generator=gen)[:len(kn)]
        row = {"p": answer_prob(lm, fact), "n": len(kn)}
        for name, ids in (("located", kn), ("random", rand)):
            layers = to_layer_dict(ids, site.shape)
            row[f"double {name}"] = answer_prob(lm, fact, excite(layers))
            row[f"zero {name}"] = answer_prob(lm, fact, silence(layers))
        out.append(row)
    return pd.DataFrame(out)


def double_zero_table(tests: dict[str, pd.DataFrame], n_resamples: int, seed: int) -> pd.DataFrame:
    """Rows {data, condition, prompts, P rises, P falls, rises 95% CI} per data set of `tests`
    (`activation_test` frames) and edit: the share of prompts whose P(answer) rises / falls
    under the edit, the rises' 95 % bootstrap interval over prompts as "lo-hi" (rounded)."""
    rows = []
    for data, t in tests.items():
        for cond in CONDITIONS:
            rises = (t[cond] > t["p"]).astype(float)
            mean, lo, hi = metrics.mean_ci(rises, n_resamples=n_resamples, seed=seed)
            rows.append({"data": data, "condition": cond, "prompts": len(t), "P rises": mean,
                         "P falls": (t[cond] < t["p"]).mean(), "rises 95% CI": f"{rounded(lo)}-{rounded(hi)}"})
    return pd.DataFrame(rows)


def fact_overlaps(sets: dict[str, tuple[list, int]]) -> pd.DataFrame:
    """`[fact] x method`: each fact's mean pairwise overlap (Eq. 9) of its wordings' located
    sets (`fidelity_sets`), the per-fact values `fidelity_table` averages; a fact whose sets
    are all empty is nan."""
    return pd.DataFrame({m: [metrics.pairwise_overlap(s) for s in by_fact] for m, (by_fact, _) in sets.items()})


def sized_circuit(circuit: Circuit, head_params: Sequence[float], mlp_params: Sequence[float], total: int,
                  share: float = 0.02) -> list[Node]:
    """The circuit at a fixed share of the parameters (rule fixed before the run: the paper's
    circuits hold 1.6-2.6 % of the parameters, so aim at 2 %): the model's nodes in order of
    |score| (`Circuit.top`), each kept when the kept nodes' parameters (`node_parameters`:
    per-layer head and MLP counts, the model's total) stay <= share x total, else skipped."""
    kept, used = [], 0.0
    for node in circuit.top(circuit.n_nodes):
        size = mlp_params[node.layer] if node.head is None else head_params[node.layer]
        if used + size <= share * total:
            kept.append(node)
            used += size
    return kept


def edit_layers(n_layers: int, k: int | None, subject_is_last: bool = False) -> tuple[list[int], dict[int, str]]:
    """The layers ROME edits (Fig. 2) and the excluded ones with the reason. An MLP edit at
    the subject's last token changes that position's residual stream only; at the last layer
    no later attention moves it to the read position (the prompt's last token), so the edit
    cannot act there unless the subject ends the prompt. k evenly spaced layers (first and
    last usable ones included; None = every usable layer)."""
    excluded = {} if subject_is_last else {n_layers - 1: "last layer: an edit at the subject position "
                                                          "reaches no later attention, so never the read position"}
    usable = [l for l in range(n_layers) if l not in excluded]
    if k is None or k >= len(usable):
        return usable, excluded
    idx = sorted({round(i * (len(usable) - 1) / max(k - 1, 1)) for i in range(k)})
    return [usable[i] for i in idx], excluded


def traced_vs_other(per_layer: pd.DataFrame, traced: dict, layers: Sequence[int]) -> pd.DataFrame:
    """Per fact and prompt kind: ROME success at the edited layer nearest the fact's traced
    layer vs the mean over the other edited layers. per_layer: rows {fact, layer, prompt kind,
    success}; traced: {fact: traced layer}."""
    rows = []
    for fact, layer in traced.items():
        near = min(layers, key=lambda l: abs(l - layer))
        for kind, d in per_layer[per_layer.fact == fact].groupby("prompt kind"):
            rows.append({"fact": fact, "prompt kind": kind, "traced layer": d[d.layer == near]["success"].mean(),
                         "other layers": d[d.layer != near]["success"].mean()})
    return pd.DataFrame(rows, columns=["fact", "prompt kind", "traced layer", "other layers"])


def claims(overlaps: pd.DataFrame, kn_known: pd.DataFrame, rome: pd.DataFrame, recall: pd.DataFrame,
           n_resamples: int = 2000, seed: int = 0, notes: dict | None = None, figures: dict | None = None) -> list[Claim]:
    """The rows of CN-02..09 (rules in rules/CN.json), every interval a bootstrap over facts:

    overlaps: `fact_overlaps` (fractions) with columns "KN", "causal tracing" and SIZED;
    kn_known: `activation_test` on the known facts (one row per fact);
    rome: `traced_vs_other` rows of the edited wording (success fractions);
    recall: a row per fact, "top-1" (bool, the answer is top-1 with only the SIZED circuit).
    notes: {id: text} added to the rows; figures: {id: path}."""
    notes, figures = notes or {}, figures or {}
    ci = dict(n_resamples=n_resamples, seed=seed)
    out = []

    def row(id, triple, n, n_of="facts"):
        out.append(measured(id, Estimate.of(triple, n, n_of), note=notes.get(id, ""), figure=figures.get(id)))

    three = overlaps[["KN", "causal tracing", SIZED]].dropna()
    row("CN-02", metrics.bootstrap_ci(lambda *cols: max(100 * np.mean(c) for c in cols),
                                      *(three[c].to_numpy() for c in three), **ci), len(three))
    for id, method in (("CN-03", "KN"), ("CN-04", "causal tracing"), ("CN-05", SIZED)):
        x = 100 * overlaps[method].dropna().to_numpy()
        row(id, metrics.unit_mean_ci(x, **ci), len(x))
    t = kn_known
    row("CN-06", metrics.diff_ci(100 * (t["double located"] > t["p"]).to_numpy(float),
                                 100 * (t["double random"] > t["p"]).to_numpy(float), **ci), len(t))
    row("CN-07", metrics.diff_ci(100 * (t["zero located"] < t["p"]).to_numpy(float),
                                 100 * (t["zero random"] < t["p"]).to_numpy(float), **ci), len(t))
    r = rome.dropna(subset=["traced layer", "other layers"])
    row("CN-08", metrics.diff_ci(100 * r["traced layer"].to_numpy(float), 100 * r["other layers"].to_numpy(float), **ci), len(r))
    row("CN-09", metrics.unit_mean_ci(100 * recall["top-1"].to_numpy(float), **ci), len(recall))
    return out


def claims_table(rows: Sequence[Claim]) -> pd.DataFrame:
    """The claims as the notebooks print them: id, estimate, interval, n, verdict, flags (rounded)."""
    return pd.DataFrame([{"id": c.id, "estimate": "" if c.estimate is None else rounded(c.estimate), "95% CI": "" if c.ci is None or c.ci[0] is None else
                          f"[{rounded(c.ci[0])}, {rounded(c.ci[1])}]", "n": f"{c.n} {c.n_of}".strip(), "unit": c.unit,
                          "verdict": c.verdict, "flags": ", ".join(c.flags)} for c in rows]).set_index("id")
