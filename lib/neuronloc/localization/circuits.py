"""Knowledge circuits (Yao et al. 2024; a CNL baseline, CNL §3) by node attribution patching.

Nodes: every attention head (site `attn.head`, units `site.head(h)`: the head's slice of
the attention output projection's input) and every MLP (site `mlp.out`) of every layer.
Ablating a node replaces its activation at every prompt position by 0 ("zero") or by its
mean over the prompt's positions in the clean run ("mean").

Score (attribution patching, Nanda 2023; Syed et al. 2023): the first-order estimate of
the change of P(answer) when the node alone is ablated,
  score(node) = sum over positions and the node's units of dP/da * (a_ablated - a),
from one clean forward and one backward for all nodes at once; reported relative to
P(answer) (score / p_clean). A node belongs to the circuit when |score| >= threshold
(or it is among the top_k by |score|). Nodes, not edges: edge attribution patching
would score head-to-head paths and needs one gradient per receiving node.

Evaluation (`circuit_recall`): ablate every node NOT in the circuit (one forward) and
read P(answer) and whether it is the top-1 token.

Size: `Circuit.share` is the fraction of the model's nodes; `parameter_share` the fraction of
its parameters (a head = 1/n_heads of its attention block, an MLP = its block).

Cost per fact: find = 1 forward + 1 backward (+ nothing for mean ablation: the means
come from the same clean forward); evaluate = 1 forward (+ 1 clean forward for the means).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..engine import logits_from
from ..hooks import Edit, capture, intervene
from ..models import LM
from .facts import Fact, make_fact

ABLATIONS = ("zero", "mean")


class Node(NamedTuple):
    """An attention head (head = its index) or the MLP (head = None) of one layer."""

    layer: int
    head: int | None = None


@dataclass
class Circuit:
    """heads `[layer, head]`, mlps `[layer]`: attribution-patching scores (estimated change of
    P(answer) when the node is ablated, / p_clean). nodes: the circuit, by |score|, best first."""

    fact: Fact
    heads: torch.Tensor
    mlps: torch.Tensor
    nodes: list[Node]
    clean: float
    params: dict = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        """Nodes of the whole model."""
        return self.heads.numel() + self.mlps.numel()

    @property
    def all_nodes(self) -> list[Node]:
        """Every node of the model, layer by layer: its heads in order, then its MLP."""
        n_layers, n_heads = self.heads.shape
        return [Node(l, h) for l in range(n_layers) for h in (*range(n_heads), None)]

    def top(self, k: int) -> list[Node]:
        """The k nodes of largest |score| (ties by node order): `knowledge_circuit(top_k=k)`'s
        nodes, from this circuit's scores without recomputing them."""
        return _ranked(self.heads, self.mlps)[:k]

    @property
    def share(self) -> float:
        """Fraction of the model's nodes in the circuit."""
        return len(self.nodes) / self.n_nodes


@dataclass(frozen=True)
class Recall:
    """The fact read with only the circuit: P(answer), and whether the answer is the top-1 token."""

    prob: float
    top1: bool


def _check(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; use one of {', '.join(ABLATIONS)}")


def _answer_prob(lm: LM, fact: Fact) -> torch.Tensor:
    """P over the vocabulary at the last prompt position (run inside the caller's hooks): `[vocab]`."""
    logits = lm.model(input_ids=fact.prompt[None].to(lm.device), **logits_from(lm.model, 1)).logits
    return logits[0, -1].double().softmax(-1)


def node_scores(lm: LM, fact: Fact, ablation: str = "zero") -> tuple[torch.Tensor, torch.Tensor, float]:
    """Attribution-patching scores: (heads `[layer, head]`, mlps `[layer]`, p_clean)."""
    _check(ablation)
    heads_site, mlp_site = lm.site("attn.head"), lm.site("mlp.out")
    with capture(lm.model, heads_site, positions="all", grad=True) as heads, \
            capture(lm.model, mlp_site, positions="all", grad=True) as mlps:
        p = _answer_prob(lm, fact)[fact.target]
        p.backward()
    p_clean = float(p.detach())

    def delta(cap, layer):  # dP/da * (a_ablated - a), per unit: `[n_inner]`
        a = cap.acts[layer][0].double()
        ablated = a.mean(0, keepdim=True) if ablation == "mean" else torch.zeros_like(a)
        return (cap.grad(layer)[0].double() * (ablated - a)).sum(0)

    n = heads_site.n_layers
    head_scores = torch.stack([delta(heads, l).reshape(heads_site.n_heads, -1).sum(-1) for l in range(n)])
    mlp_scores = torch.stack([delta(mlps, l).sum() for l in range(n)])
    return head_scores.float().cpu() / p_clean, mlp_scores.float().cpu() / p_clean, p_clean


def knowledge_circuit(lm: LM, fact, ablation: str = "zero", threshold: float | None = 0.01,
                      top_k: int | None = None, subject=None, answer=None) -> Circuit:
    """The circuit of one fact (a Fact, or what `make_fact` takes): nodes whose estimated
    relative effect |score| >= threshold, or the top_k by |score| (then threshold is ignored)."""
    fact = make_fact(lm, fact, subject, answer)
    heads, mlps, p_clean = node_scores(lm, fact, ablation)
    ranked = _ranked(heads, mlps)
    if top_k is not None:
        nodes = ranked[:top_k]
    elif threshold is not None:
        scores = {n: abs(float(mlps[n.layer] if n.head is None else heads[n.layer, n.head])) for n in ranked}
        nodes = [n for n in ranked if scores[n] >= threshold]
    else:
        raise ValueError("pass threshold= or top_k= to choose the circuit's nodes")
    return Circuit(fact, heads, mlps, nodes, p_clean, dict(ablation=ablation, threshold=threshold, top_k=top_k))


def _ranked(heads: torch.Tensor, mlps: torch.Tensor) -> list[Node]:
    """Every node by |score|, largest first; ties in node order (heads of layer 0.., then MLPs)."""
    all_nodes = [Node(l, h) for l in range(heads.shape[0]) for h in range(heads.shape[1])] + \
                [Node(l) for l in range(len(mlps))]
    scores = torch.cat([heads.flatten(), mlps]).abs()
    return [all_nodes[int(i)] for i in torch.argsort(scores, descending=True, stable=True)]


def ablation_edits(lm: LM, fact: Fact, ablated: list[Node], ablation: str = "zero") -> tuple[list[Edit], list[Edit]]:
    """Edits that ablate `ablated` at every position: (attn.head edits, mlp.out edits)."""
    _check(ablation)
    heads_site, mlp_site = lm.site("attn.head"), lm.site("mlp.out")
    means = {}
    if ablation == "mean":
        with torch.no_grad(), capture(lm.model, heads_site, positions="all") as h, \
                capture(lm.model, mlp_site, positions="all") as m:
            _answer_prob(lm, fact)
        means = {"head": {l: a[0].mean(0) for l, a in h.acts.items()}, "mlp": {l: a[0].mean(0) for l, a in m.acts.items()}}
    by_layer: dict[int, list[int]] = {}
    mlp_edits = []
    for node in ablated:
        if node.head is None:
            mlp_edits.append(Edit(node.layer, None, "set", means["mlp"][node.layer] if means else 0.0, positions="all"))
        else:
            by_layer.setdefault(node.layer, []).extend(heads_site.head(node.head))
    head_edits = [Edit(l, units, "set", means["head"][l][units] if means else 0.0, positions="all")
                  for l, units in by_layer.items()]
    return head_edits, mlp_edits


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def node_parameters(lm: LM) -> tuple[list[float], list[int], int]:
    """Parameter counts for CNL's 'share of the model's parameters' of a circuit (§3.1, §3.2):
    (per layer, one attention head's parameters; per layer, the MLP's; all the model's).

    A head is 1/n_heads of its attention block's parameters (its query rows and output
    columns, and its share of the key/value heads it reads under grouped-query attention);
    the MLP is every parameter of the block whose down-projection holds the neurons. The
    total counts every parameter once (tied embeddings once), norms and embeddings included.
    """
    heads_site, mid = lm.site("attn.head"), lm.site("ffn.mid")
    attn_path, mlp_path = _parent(heads_site.module_path), _parent(mid.module_path)
    if not attn_path or not mlp_path:
        raise ValueError(f"cannot find the attention and MLP blocks of {lm.family.name!r} "
                         f"(from {heads_site.module_path!r} and {mid.module_path!r})")
    layers = lm.model.get_submodule(heads_site.layers_path)

    def count(module):
        return sum(p.numel() for p in module.parameters())
    heads = [count(layers[l].get_submodule(attn_path)) / heads_site.n_heads for l in range(heads_site.n_layers)]
    mlps = [count(layers[l].get_submodule(mlp_path)) for l in range(heads_site.n_layers)]
    return heads, mlps, count(lm.model)


def parameter_share(lm: LM, nodes) -> float:
    """Fraction of all the model's parameters held by `nodes` (a Circuit or a list of Node);
    counts from `node_parameters`."""
    heads, mlps, total = node_parameters(lm)
    nodes = nodes.nodes if isinstance(nodes, Circuit) else nodes
    return sum(mlps[n.layer] if n.head is None else heads[n.layer] for n in set(nodes)) / total


@torch.no_grad()
def circuit_recall(lm: LM, fact, nodes, ablation: str = "zero", subject=None, answer=None) -> Recall:
    """Read the fact with only `nodes` (a Circuit or a list of Node): every other node ablated."""
    fact = make_fact(lm, fact, subject, answer)
    keep = set(nodes.nodes if isinstance(nodes, Circuit) else nodes)
    n_layers, n_heads = lm.site("attn.head").n_layers, lm.site("attn.head").n_heads
    ablated = [Node(l, h) for l in range(n_layers) for h in (*range(n_heads), None) if Node(l, h) not in keep]
    head_edits, mlp_edits = ablation_edits(lm, fact, ablated, ablation)
    with intervene(lm.model, lm.site("attn.head"), head_edits), intervene(lm.model, lm.site("mlp.out"), mlp_edits):
        probs = _answer_prob(lm, fact)
    return Recall(float(probs[fact.target]), int(probs.argmax()) == fact.target)
