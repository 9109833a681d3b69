"""Notebook 01, CNL §3: fidelity of KN, causal tracing and knowledge circuits across the
paraphrases of one fact (§3.1), KN's double/zero validation (§3.2) and the fidelity claims.

From the per-prompt localizations of `localization.validation.localize` (`located`:
`[fact][wording]` of `Localized`):
  fidelity_sets     each method's located sets `[fact][wording]` and the size of its universe
  fidelity_table    CNL Eq. 9 overlap of the paraphrases of one fact, of different facts, of random sets
  fidelity_summary  that table as the notebook shows it: one row per method, with the 95 % interval
  fact_overlaps     each method's paraphrase overlap per fact (the unit the claims resample)
  fact_baselines    per fact: paraphrase overlap, overlap with other facts, with random sets
  baseline_table    those three per method with intervals over facts, and the differences
  sized_circuit     a circuit cut to a share of the model's parameters (the paper's 1-3 %)
  random_like       a random circuit of the same composition (as many heads and MLPs)
  recall_table      circuit-only recall of the paper-sized circuit vs random and other facts' circuits
and KN's own validation (KN, Dai et al. 2022), re-run by CNL §3.2:
  activation_test   P(answer) with the located neurons doubled / zeroed, and as many random ones
  double_zero_table the share of prompts whose P(answer) rises / falls under each edit
and the notebook's verdicts:
  edit_layers       the layers ROME edits: every layer where an edit at the subject can act
  fact_edit_layers  one fact's edited layers: that grid and the fact's traced layer
  rome_sweep        `layer_sweep` of one fact, cached layer by layer
  traced_vs_other   ROME success at the traced layer vs the other edited layers, per fact
  claims            the rows of CN-02..09 (`neuronloc.claims.measured`), intervals over facts
"""
from __future__ import annotations

import os
from itertools import combinations
from typing import NamedTuple, Sequence

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


class NodeUniverse(NamedTuple):
    """The model's circuit nodes as a universe for chance overlaps: `n_layers` x (`n_heads`
    heads + 1 MLP), ids as `node_ids`. Random circuits of the same size draw as many heads and
    as many MLPs as the circuit holds (an MLP holds 27 heads' parameters in SmolLM2)."""

    n_layers: int
    n_heads: int

    def __len__(self) -> int:
        return self.n_layers * (self.n_heads + 1)

    def random_overlap(self, a: Sequence[int], b: Sequence[int]) -> float:
        """Expected Eq. 9 overlap of two random node sets with a's and b's numbers of heads and
        of MLPs: E|A n B| = h_a h_b / (L H) + m_a m_b / L, then (E / |a| + E / |b|) / 2."""
        def counts(ids):
            mlps = sum(1 for i in set(ids) if i % (self.n_heads + 1) == self.n_heads)
            return len(set(ids)) - mlps, mlps
        (ha, ma), (hb, mb) = counts(a), counts(b)
        inter = ha * hb / (self.n_layers * self.n_heads) + ma * mb / self.n_layers
        return (inter / (ha + ma) + inter / (hb + mb)) / 2


def chance_overlap(a: Sequence[int], b: Sequence[int], universe) -> float:
    """Expected Eq. 9 overlap of random sets of a's and b's sizes: out of `universe` units (an
    int: `metrics.random_overlap`) or of the same composition (a `NodeUniverse`)."""
    if isinstance(universe, NodeUniverse):
        return universe.random_overlap(a, b)
    return metrics.random_overlap(len(a), len(b), universe)


def fidelity_sets(located: Sequence[Sequence[Localized]], site: Site, sparse: int,
                  sized=None, extra: dict | None = None) -> dict[str, tuple[list, object]]:
    """{method: (located sets `[fact][wording]` of ids, the universe the sets are drawn from)}:
    KN neurons (of `site`'s n_neurons), causal tracing's top layers (of n_layers), the
    knowledge circuit's nodes and its `sparse` nodes of largest |score| (a `NodeUniverse`:
    random circuits keep the numbers of heads and MLPs); with `sized` (a function Circuit ->
    nodes, e.g. `sized_circuit`), also SIZED: the circuit cut to the paper's share of the
    parameters; `extra` {name: (sets, universe)} appended (e.g. a sensitivity variant)."""
    circuit = located[0][0].circuit
    n_layers, n_heads = circuit.heads.shape
    nodes = NodeUniverse(n_layers, n_heads)

    def each(get):
        return [[get(loc) for loc in fs] for fs in located]
    return {"KN": (each(lambda loc: loc.kn.tolist()), site.n_neurons),
            "causal tracing": (each(lambda loc: loc.layers), site.n_layers),
            "knowledge circuit": (each(lambda loc: node_ids(loc.circuit.nodes, n_heads)), nodes),
            f"circuit, top {sparse} nodes": (each(lambda loc: node_ids(loc.circuit.top(sparse), n_heads)), nodes),
            **({SIZED: (each(lambda loc: node_ids(sized(loc.circuit), n_heads)), nodes)} if sized else {}),
            **(extra or {})}


def fidelity_table(sets: dict[str, tuple[list, int]], n_resamples: int, seed: int) -> pd.DataFrame:
    """Rows {method, comparison, overlap, lo, hi}, three per method of `sets` (`fidelity_sets`),
    all CNL Eq. 9 `metrics.overlap`:
      paraphrases of one fact: mean over facts of the mean over a fact's wording pairs, with
        its 95 % bootstrap interval over facts (`metrics.mean_ci`, n_resamples, seed);
      different facts: mean over pairs of facts of the overlap of their j-th wordings (the same
        pattern filled with two facts; pairs with an empty set left out);
      random sets: mean over the wording pairs with non-empty sets of the expected overlap of
        random sets of the same sizes (`chance_overlap`: (|A| + |B|) / (2N) out of N units;
        circuits: as many random heads and MLPs)."""
    rows = []
    for m, (by_fact, universe) in sets.items():
        mean, lo, hi = metrics.mean_ci([metrics.pairwise_overlap(s) for s in by_fact], n_resamples=n_resamples, seed=seed)
        rows.append({"method": m, "comparison": PARAPHRASES, "overlap": mean, "lo": lo, "hi": hi})
        other = [metrics.overlap(a[j], b[j]) for a, b in combinations(by_fact, 2) for j in range(len(a))]
        rows.append({"method": m, "comparison": DIFFERENT, "overlap": np.nanmean(other), "lo": np.nan, "hi": np.nan})
        chance = [chance_overlap(a, b, universe) for s in by_fact for a, b in combinations(s, 2) if len(a) and len(b)]
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


def fact_baselines(sets: dict[str, tuple[list, object]]) -> pd.DataFrame:
    """Per fact (rows) and method: columns (method, comparison) of fractions:
      PARAPHRASES  the fact's mean pairwise overlap of its wordings (`fact_overlaps`);
      DIFFERENT    the mean overlap of the fact's j-th wording with every other fact's j-th
                   wording (the same pattern filled with two facts; pairs with an empty set left out);
      RANDOM       the mean over its wording pairs of the expected overlap of random sets of
                   the same sizes (`chance_overlap`).
    nan where no pair is left."""
    cols = {}
    for m, (by_fact, universe) in sets.items():
        cols[(m, PARAPHRASES)] = [metrics.pairwise_overlap(s) for s in by_fact]
        cols[(m, DIFFERENT)] = [np.nanmean(v) if len(v := [metrics.overlap(a[j], b[j]) for g, b in enumerate(by_fact) if g != i
                                                           for j in range(min(len(a), len(b)))
                                                           if len(a[j]) and len(b[j])]) else np.nan
                                for i, a in enumerate(by_fact)]
        cols[(m, RANDOM)] = [np.mean(v) if len(v := [chance_overlap(a, b, universe) for a, b in combinations(s, 2)
                                                     if len(a) and len(b)]) else np.nan for s in by_fact]
    return pd.DataFrame(cols)


def baseline_table(per_fact: pd.DataFrame, methods: Sequence[str] | None = None, n_resamples: int = 2000,
                   seed: int = 0) -> pd.DataFrame:
    """Rows {method, comparison, facts, overlap %, lo, hi, paraphrases - it (pp), lo, hi} from
    `fact_baselines`: each comparison's mean over facts with its bootstrap interval over facts
    (`metrics.unit_mean_ci`), and the paraphrase overlap minus it, paired over the facts
    where both are defined (`metrics.diff_ci`)."""
    rows = []
    ci = dict(n_resamples=n_resamples, seed=seed)
    for m in methods or list(dict.fromkeys(per_fact.columns.get_level_values(0))):
        for comp in (PARAPHRASES, DIFFERENT, RANDOM):
            x = 100 * per_fact[(m, comp)].dropna().to_numpy(float)
            v, lo, hi = metrics.unit_mean_ci(x, **ci)
            row = {"method": m, "comparison": comp, "facts": len(x), "overlap %": v, "lo": lo, "hi": hi}
            if comp != PARAPHRASES:
                both = per_fact[[(m, PARAPHRASES), (m, comp)]].dropna().to_numpy(float)
                row.update(zip(("paraphrases - it (pp)", "diff lo", "diff hi"),
                               metrics.diff_ci(100 * both[:, 0], 100 * both[:, 1], **ci)))
            rows.append(row)
    return pd.DataFrame(rows)


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


def random_like(nodes: Sequence[Node], all_nodes: Sequence[Node], gen: torch.Generator) -> list[Node]:
    """A random circuit of the same composition as `nodes`: as many heads and as many MLPs,
    each drawn uniformly without replacement from `all_nodes` (one `torch.randperm` of the
    heads, then one of the MLPs, from `gen`)."""
    heads = [n for n in all_nodes if n.head is not None]
    mlps = [n for n in all_nodes if n.head is None]
    k_mlp = sum(1 for n in nodes if n.head is None)
    pick_h = torch.randperm(len(heads), generator=gen)[:len(nodes) - k_mlp].tolist()
    pick_m = torch.randperm(len(mlps), generator=gen)[:k_mlp].tolist()
    return [heads[i] for i in pick_h] + [mlps[i] for i in pick_m]


OWN, RANDOM_CIRCUIT, OTHER_FACT = "own circuit", "random circuits, same heads and MLPs", "another fact's circuit"


def recall_table(own: Sequence[bool], random: np.ndarray, other: Sequence[bool], n_resamples: int = 2000,
                 seed: int = 0) -> pd.DataFrame:
    """Circuit-only recall (answer top-1 with only the circuit kept), in %, per circuit:
    OWN (`own` [fact]), RANDOM_CIRCUIT (`random` [draw, fact]: the draws are a second level of
    the bootstrap) and OTHER_FACT (`other` [fact]: the fact read with another fact's circuit);
    each with its interval over facts, and own - it, paired over facts (`metrics.diff_ci`)."""
    own, random, other = (np.asarray(x, dtype=float) for x in (own, random, other))
    ci = dict(n_resamples=n_resamples, seed=seed)
    rows = [{"circuit": OWN, "facts": len(own), **dict(zip(("recall %", "lo", "hi"), metrics.unit_mean_ci(100 * own, **ci)))}]
    for name, x in ((RANDOM_CIRCUIT, random), (OTHER_FACT, other)):
        rows.append({"circuit": name, "facts": x.shape[-1],
                     **dict(zip(("recall %", "lo", "hi"), metrics.bootstrap_ci(np.mean, 100 * x, **ci))),
                     **dict(zip(("own - it (pp)", "diff lo", "diff hi"), metrics.diff_ci(100 * own, 100 * x, **ci)))})
    return pd.DataFrame(rows)


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


def fact_edit_layers(grid: Sequence[int], traced: int, excluded: dict[int, str]) -> list[int]:
    """The layers one fact is edited at: the evenly spaced `grid` and the fact's traced layer
    (when an edit can act there, i.e. it is not `excluded`), sorted."""
    return sorted(set(grid) | ({traced} if traced not in excluded else set()))


def rome_sweep(lm: LM, store, prompt: str, subject: str, new: str, true: str, layers: Sequence[int],
               paraphrases: Sequence[str], covs: dict, cov_texts: int, **edit_params) -> list[dict]:
    """`localization.validation.layer_sweep` of one fact, each layer's rows cached on their own
    in `store` (a run with other layers reuses them; the layers not cached are edited in one
    `layer_sweep`, their edits optimised together): the unedited rows (layer None) once,
    then every layer's rows. covs: {layer: key second moment of `cov_texts` texts};
    edit_params go to `rome_edit` (default: ROME's)."""
    from ..localization.validation import layer_sweep
    from ..store import key

    keys = {layer: key(model=lm, kind="rome_sweep_layer", prompt=prompt, subject=subject, new=new, true=true, layer=layer,
                       paraphrases=list(paraphrases), cov_texts=cov_texts, **edit_params) for layer in layers}
    parts = {layer: store.get(k) for layer, k in keys.items()}
    missing = [layer for layer, part in parts.items() if part is None]
    if missing:  # the missing layers' edits optimised together, stored one entry per layer as before
        swept = layer_sweep(lm, prompt, subject, new, true, missing, paraphrases, covs=covs, **edit_params)
        for layer in missing:
            parts[layer] = [r for r in swept if r["layer"] is None or r["layer"] == layer]
            store.put(keys[layer], parts[layer])
    rows = []
    for i, layer in enumerate(layers):
        rows += [r for r in parts[layer] if r["layer"] is not None or i == 0]
    return rows


def traced_vs_other(per_layer: pd.DataFrame, traced: dict, grid: Sequence[int]) -> pd.DataFrame:
    """Per fact and prompt kind: ROME success at the fact's traced layer (the edited layer
    nearest to it when it was not edited) vs the mean over the `grid` layers other than it.
    per_layer: rows {fact, layer, prompt kind, success}; traced: {fact: traced layer}."""
    rows = []
    for fact, layer in traced.items():
        d_fact = per_layer[per_layer.fact == fact]
        near = min(d_fact.layer.unique(), key=lambda l: (abs(l - layer), l))
        for kind, d in d_fact.groupby("prompt kind"):
            rows.append({"fact": fact, "prompt kind": kind, "traced layer": d[d.layer == near]["success"].mean(),
                         "other layers": d[d.layer.isin([l for l in grid if l != near])]["success"].mean()})
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


def conclusions(rows: Sequence[Claim], baselines: pd.DataFrame, recall_vs: pd.DataFrame, rome_gap: pd.DataFrame,
                sensitivity: str | None = None) -> str:
    """The notebook's conclusions as Markdown, every number from `rows` (the claims),
    `baselines` (`baseline_table`), `recall_vs` (`recall_table`) and `rome_gap` (per prompt kind:
    "traced - other (pp)", "lo", "hi", "facts"), rounded to 2 significant digits;
    `sensitivity`: the method of `baselines` shown beside causal tracing (window 1)."""
    by = {c.id: c for c in rows}

    def est(c):
        return f"{rounded(c.estimate)} {c.unit} [{rounded(c.ci[0])}, {rounded(c.ci[1])}]" if c.ci and c.ci[0] is not None \
            else f"{rounded(c.estimate)} {c.unit}"

    def base(method, comp, col="overlap %", lo="lo", hi="hi"):
        r = baselines[(baselines.method == method) & (baselines.comparison == comp)].iloc[0]
        return f"{rounded(r[col])} [{rounded(r[lo])}, {rounded(r[hi])}]"

    lines = []
    if all(i in by for i in ("CN-03", "CN-04", "CN-05")):
        vs = "; ".join(f"{m}: paraphrases - random sets {base(m, RANDOM, 'paraphrases - it (pp)', 'diff lo', 'diff hi')} pp, "
                       f"paraphrases - different facts {base(m, DIFFERENT, 'paraphrases - it (pp)', 'diff lo', 'diff hi')} pp"
                       for m in ("KN", "causal tracing", SIZED) if m in set(baselines.method))
        sens = f" (sensitivity, window 1: {base(sensitivity, PARAPHRASES)} %)" if sensitivity in set(baselines.method) else ""
        lines.append(f"**Fidelity (CN-02..05).** Mean paraphrase overlap over {by['CN-03'].n} facts: KN {est(by['CN-03'])}, "
                     f"causal tracing {est(by['CN-04'])}{sens}, paper-sized circuit {est(by['CN-05'])}; the largest "
                     f"(CN-02) is {est(by['CN-02'])}. Against the baselines, per fact: {vs}.")
    if "CN-06" in by and "CN-07" in by:
        lines.append(f"**KN's own validation (CN-06, CN-07).** Located minus random neurons, share of known facts whose "
                     f"P(answer) rises when doubled: {est(by['CN-06'])}; falls when zeroed: {est(by['CN-07'])}.")
    if "CN-08" in by:
        other = "; ".join(f"{kind}: {rounded(r['traced - other (pp)'])} pp [{rounded(r['lo'])}, {rounded(r['hi'])}]"
                          for kind, r in rome_gap.iterrows())
        lines.append(f"**ROME's layer validation (CN-08).** Edit success at the traced layer minus the other edited layers, "
                     f"{by['CN-08'].n} facts: {other}.")
    if "CN-09" in by:
        r = recall_vs.set_index("circuit")
        lines.append(f"**Circuit-only recall (CN-09).** Paper-sized circuit {est(by['CN-09'])}; random circuits of the same "
                     f"composition {rounded(r.loc[RANDOM_CIRCUIT, 'recall %'])} % (own - random "
                     f"{rounded(r.loc[RANDOM_CIRCUIT, 'own - it (pp)'])} pp [{rounded(r.loc[RANDOM_CIRCUIT, 'diff lo'])}, "
                     f"{rounded(r.loc[RANDOM_CIRCUIT, 'diff hi'])}]); another fact's circuit {rounded(r.loc[OTHER_FACT, 'recall %'])} % "
                     f"(own - other {rounded(r.loc[OTHER_FACT, 'own - it (pp)'])} pp [{rounded(r.loc[OTHER_FACT, 'diff lo'])}, "
                     f"{rounded(r.loc[OTHER_FACT, 'diff hi'])}]).")
    counts = {v: sum(c.verdict == v for c in rows) for v in ("replicated", "contradicted", "inconclusive", "n/a")}
    lines.append("**Verdicts.** " + ", ".join(f"{v} {k}" for v, k in counts.items()) + ": "
                 + "; ".join(f"{c.id} {c.verdict}" for c in rows) + ".")
    return "\n\n".join(lines)
