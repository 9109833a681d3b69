"""Knowledge circuits against plain torch hooks: the full circuit is the model, the empty
circuit is the fully ablated model run by hand, and attribution-patching scores are the
derivative of P(answer) along the ablation, taken by central finite differences."""
from __future__ import annotations

import pytest
import torch

from neuronloc.localization import Fact, Node, circuit_recall, knowledge_circuit, node_scores

from conftest import prob_under_hooks, tiny_llama

N_LAYERS, N_HEADS, HEAD_DIM = 3, 4, 8


@pytest.fixture(scope="module")
def lm():
    lm = tiny_llama(seed=1)
    lm.model.double()  # finite differences need the precision
    return lm


@pytest.fixture(scope="module")
def fact():
    ids = torch.randint(2, 128, (7,), generator=torch.Generator().manual_seed(0))
    return Fact(ids, range(2, 4), torch.tensor([5]))


def hand_prob(lm, fact, nodes_eps: dict, ablation: str) -> float:
    """P(answer) with each node (layer, head or None) moved by plain hooks from its
    activation a towards its ablated value: a + eps * (ablated - a), at every position;
    ablated = 0, or the node's mean over the positions of the clean run."""
    layers = lm.model.model.layers
    clean = {}
    if ablation == "mean":  # a clean run records each node's mean
        handles = []
        for layer in range(N_LAYERS):
            handles.append(layers[layer].mlp.register_forward_hook(
                lambda mod, args, out, layer=layer: clean.__setitem__((layer, None), out.mean(1, keepdim=True))))
            handles.append(layers[layer].self_attn.o_proj.register_forward_pre_hook(
                lambda mod, args, layer=layer: clean.__setitem__((layer, "heads"), args[0].mean(1, keepdim=True))))
        with torch.no_grad():
            lm.model(input_ids=fact.prompt[None])
        for h in handles:
            h.remove()

    def target(x, layer, head, units):
        if ablation == "zero":
            return -x[..., units]
        return clean[(layer, "heads" if head is not None else None)][..., units] - x[..., units]

    handles = []
    for (layer, head), eps in nodes_eps.items():
        if head is None:
            def out_hook(mod, args, out, eps=eps, layer=layer):
                return out + eps * target(out, layer, None, slice(None))
            handles.append(layers[layer].mlp.register_forward_hook(out_hook))
        else:
            units = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)

            def in_hook(mod, args, eps=eps, units=units, layer=layer, head=head):
                x = args[0].clone()
                x[..., units] = x[..., units] + eps * target(args[0], layer, head, units)
                return (x,)
            handles.append(layers[layer].self_attn.o_proj.register_forward_pre_hook(in_hook))
    return prob_under_hooks(lm, fact, handles)


ALL = [(l, h) for l in range(N_LAYERS) for h in (*range(N_HEADS), None)]


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_full_circuit_is_the_model_and_empty_circuit_the_ablated_model(lm, fact, ablation):
    clean = hand_prob(lm, fact, {}, ablation)
    full = circuit_recall(lm, fact, [Node(*n) for n in ALL], ablation)
    assert full.prob == clean  # nothing ablated: the same forward
    with torch.no_grad():
        top = int(lm.model(input_ids=fact.prompt[None]).logits[0, -1].argmax())
    assert full.top1 == (top == fact.target)
    empty = circuit_recall(lm, fact, [], ablation)
    assert empty.prob == pytest.approx(hand_prob(lm, fact, {n: 1.0 for n in ALL}, ablation), rel=1e-9)
    assert empty.prob != pytest.approx(clean, rel=1e-3)
    # a partial circuit ablates exactly the other nodes
    keep = [Node(0, 1), Node(2), Node(1, 3)]
    part = circuit_recall(lm, fact, keep, ablation)
    assert part.prob == pytest.approx(hand_prob(lm, fact, {n: 1.0 for n in ALL if Node(*n) not in keep}, ablation), rel=1e-9)


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_attribution_patching_is_the_derivative_along_the_ablation(lm, fact, ablation):
    heads, mlps, p_clean = node_scores(lm, fact, ablation)
    assert heads.shape == (N_LAYERS, N_HEADS) and mlps.shape == (N_LAYERS,)
    eps = 1e-3  # eager attention takes its softmax in float32: smaller steps drown in rounding
    for layer, head in [(0, 2), (1, 0), (2, None), (0, None)]:
        slope = (hand_prob(lm, fact, {(layer, head): eps}, ablation)
                 - hand_prob(lm, fact, {(layer, head): -eps}, ablation)) / (2 * eps)
        score = heads[layer, head] if head is not None else mlps[layer]
        assert float(score) * p_clean == pytest.approx(slope, rel=5e-3), (layer, head)


def test_circuit_keeps_nodes_by_score(lm, fact):
    c = knowledge_circuit(lm, fact, top_k=4)
    scores = {Node(l, h): abs(float(c.heads[l, h])) for l in range(N_LAYERS) for h in range(N_HEADS)}
    scores.update({Node(l): abs(float(c.mlps[l])) for l in range(N_LAYERS)})
    assert c.nodes == sorted(scores, key=scores.get, reverse=True)[:4]
    assert c.share == 4 / (N_LAYERS * (N_HEADS + 1))
    t = knowledge_circuit(lm, fact, threshold=0.05)
    assert set(t.nodes) == {n for n, s in scores.items() if s >= 0.05}
    with pytest.raises(ValueError, match="ablation"):
        knowledge_circuit(lm, fact, ablation="resample")
    every = c.all_nodes  # layer by layer, heads then the MLP, whatever the head count
    assert len(every) == len(set(every)) == c.n_nodes == N_LAYERS * (N_HEADS + 1)
    assert every[:N_HEADS + 1] == [Node(0, h) for h in range(N_HEADS)] + [Node(0)]
    assert set(scores) == set(every)
