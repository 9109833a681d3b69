"""Notebook 01, CNL §3: fidelity of KN, causal tracing and knowledge circuits across the
paraphrases of one fact (§3.1), KN's double/zero validation (§3.2) and the fidelity claims.

From the per-prompt localizations of `localization.validation.localize` (`located`:
`[fact][wording]` of `Localized`):
  fidelity_sets     each method's located sets `[fact][wording]` and the size of its universe
  fidelity_table    CNL Eq. 9 overlap of the paraphrases of one fact, of different facts, of random sets
  fidelity_summary  that table as the notebook shows it: one row per method, with the 95 % interval
  fidelity_claim    the claim "paraphrase overlap < 50 %" of one method (CN-03..05)
and KN's own validation (KN, Dai et al. 2022), re-run by CNL §3.2:
  activation_test   P(answer) with the located neurons doubled / zeroed, and as many random ones
  double_zero_table the share of prompts whose P(answer) rises / falls under each edit
"""
from __future__ import annotations

import os
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import metrics
from ..claims import Claim
from ..hooks import excite, silence
from ..localization import Fact, Node
from ..localization.validation import Localized, answer_prob
from ..models import LM
from ..neurons import to_layer_dict
from ..report import rounded
from ..sites import Site

PARAPHRASES, DIFFERENT, RANDOM = "paraphrases of one fact", "different facts", "random sets"
CONDITIONS = ("double located", "double random", "zero located", "zero random")


def node_ids(nodes: Sequence[Node], n_heads: int) -> list[int]:
    """One integer per circuit node: layer x (n_heads + 1) + head, the MLP as head n_heads
    (with SmolLM2's 9 heads: layer x 10 + head, 9 = the MLP)."""
    return [n.layer * (n_heads + 1) + (n_heads if n.head is None else n.head) for n in nodes]


def fidelity_sets(located: Sequence[Sequence[Localized]], site: Site, sparse: int) -> dict[str, tuple[list, int]]:
    """{method: (located sets `[fact][wording]` of ids, number of units the sets are drawn
    from)}: KN neurons (of `site`'s n_neurons), causal tracing's top layers (of n_layers), the
    knowledge circuit's nodes and its `sparse` nodes of largest |score| (of the model's heads
    + MLPs)."""
    circuit = located[0][0].circuit
    n_heads, n_nodes = circuit.heads.shape[1], circuit.n_nodes

    def each(get):
        return [[get(loc) for loc in fs] for fs in located]
    return {"KN": (each(lambda loc: loc.kn.tolist()), site.n_neurons),
            "causal tracing": (each(lambda loc: loc.layers), site.n_layers),
            "knowledge circuit": (each(lambda loc: node_ids(loc.circuit.nodes, n_heads)), n_nodes),
            f"circuit, top {sparse} nodes": (each(lambda loc: node_ids(loc.circuit.top(sparse), n_heads)), n_nodes)}


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


def fidelity_claim(id: str, method: str, paper: str, fidelity: pd.DataFrame, n_paraphrases: int, n_facts: int,
                   figure: str | os.PathLike | None = None, sparse: int | None = None) -> Claim:
    """The claim that `method`'s mean paraphrase overlap (`fidelity_table`) is < 50 %, in %,
    the note giving the different-facts overlap, the interval and, with `sparse`, the overlap
    of the top-`sparse` circuits."""
    row = fidelity.set_index(["method", "comparison"])
    para = row.loc[(method, PARAPHRASES)]
    note = (f"different facts overlap {rounded(100 * row.loc[(method, DIFFERENT), 'overlap'])} %; {n_facts} PARAREL facts "
            f"(95 % CI {rounded(100 * para['lo'])}-{rounded(100 * para['hi'])} %)")
    if sparse is not None:
        note += f"; sparse top-{sparse} circuits overlap {rounded(100 * row.loc[(f'circuit, top {sparse} nodes', PARAPHRASES), 'overlap'])} %"
    return Claim(id, f"mean pairwise overlap of {method} sets across {n_paraphrases} paraphrases of a known fact < 50 %",
                 paper, 100 * para["overlap"], "% overlap", "replicated" if para["overlap"] < 0.5 else "not replicated",
                 note=note, figure=figure)


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
