"""Single-pass scorers: NeurGrad, CG, grad x act, ACT, LPI, RANDOM.

All read the neurons at the answer position. In a causal model the answer
position's activations influence the output only through that position's own
path, so one prefix forward (KV cache) plus a forward+backward of the answer
position alone gives every layer's gradient; several targets (e.g. one per
option, NEG probes) ride in one batch, one row each.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..engine import Query, forward_rows, make_query, option_logits_suffice, prefix_cache, resolve_layers, rows_layout
from ..hooks import capture
from ..models import LM
from ..neurons import to_ids, unflat
from ..sites import logit_lens, post_ffn_norm
from ..targets import get_target
from .base import NeuronScores, register


class AnswerGrads(NamedTuple):
    """acts `[layer, neuron]`; grads `[conditions, layer, neuron]` (None without grad);
    probs `[n_options]`: the option probabilities of the unedited read-out."""
    acts: torch.Tensor
    grads: torch.Tensor | None
    probs: torch.Tensor


def answer_position_grads(lm: LM, query: Query, answers: torch.Tensor, target="answer_prob", layers=None,
                          site: str = "ffn.mid", grad: bool = True) -> AnswerGrads:
    """Activations and gradients at the answer position, and the option probabilities
    of the same forward.

    answers `[conditions]`: the option each condition scores (e.g. every option, for
    NEG probes). The conditions differ only in what they score: each gets its own copy
    of the answer position's rows in one batch, one forward and one backward (the sum of
    the conditions' targets; rows do not interact) give each its own gradient. The rows'
    products read every weight once for all conditions, split over the threads
    (`models.split_rows`); a batched backward over one copy (`is_grads_batched`) reads
    them as often but in products of one row per condition that MKL runs on one core,
    and vmap copies the split weights. Layers not asked for hold NaN.
    """
    site_ = lm.site(site)
    target_fn = get_target(target)
    layers = resolve_layers(site_.n_layers, layers)
    answers = torch.as_tensor(answers).reshape(-1)
    n = len(answers) if grad else 1
    cache = prefix_cache(lm, query.prefix)
    layout = rows_layout(lm, query, n, cache)
    option_logits = option_logits_suffice(query, target_fn)
    with capture(lm.model, site_, layers, positions=[layout.at], grad=grad) as cap:
        with torch.set_grad_enabled(grad):
            scores = forward_rows(lm, layout, cache, option_logits)
        if grad:
            values = target_fn(scores, answers)  # [conditions]
            grads_l = torch.autograd.grad(values.sum(), [cap.probes[l] for l in layers])
    acts = torch.full((site_.n_layers, site_.n_inner), float("nan"))
    for l in layers:
        acts[l] = cap.acts[l][0, 0].float().cpu()
    probs = scores[0].detach().softmax(-1).cpu()
    if not grad:
        return AnswerGrads(acts, None, probs)
    grads = torch.full((len(answers), site_.n_layers, site_.n_inner), float("nan"))
    for l, g in zip(layers, grads_l):  # g `[conditions * rows, 1, n_inner]`, condition-major: sum a condition's rows
        grads[:, l] = g.reshape(n, layout.per_condition, -1).float().cpu().sum(1)
    return AnswerGrads(acts, grads, probs)


def neurgrad_options(lm: LM, question, target: str = "answer_prob", layers=None, site: str = "ffn.mid",
                     chat: bool = False, readout: str | None = None) -> torch.Tensor:
    """NeurGrad (NEG Eq. 1) for every option of a multiple-choice question:
    `[n_options, layer, neuron]` = dP(option)/da * sign(a), P the option's vocabulary
    probability under the read-out (its label token, or its text)."""
    query = make_query(lm, question, chat=chat, readout=readout)
    if query.n_options < 2:
        raise ValueError("neurgrad_options needs a multiple-choice question")
    acts, grads, _ = answer_position_grads(lm, query, torch.arange(query.n_options), target, layers, site)
    return grads * torch.sign(acts)


def _single(lm, question, target, layers, site, chat, readout=None):
    query = make_query(lm, question, chat=chat, readout=readout)
    acts, grads, _ = answer_position_grads(lm, query, torch.tensor([query.answer]), target, layers, site)
    return query, acts, grads[0]


def _result(scores, method, site, query, target, **params) -> NeuronScores:
    return NeuronScores(scores, method, site, params, {"target": str(target), "uid": query.uid})


@register("neurgrad")
def neurgrad(lm: LM, question, target: str = "answer_prob", layers=None, site: str = "ffn.mid", chat: bool = False,
             readout: str | None = None) -> NeuronScores:
    """NeurGrad (NEG §3.1): dF/da * sign(a), the estimated neuron empirical gradient."""
    query, acts, grads = _single(lm, question, target, layers, site, chat, readout)
    return _result(grads * torch.sign(acts), "neurgrad", site, query, target, layers=layers)


@register("grad")
def grad(lm: LM, question, target: str = "answer_prob", layers=None, site: str = "ffn.mid", chat: bool = False,
         readout: str | None = None) -> NeuronScores:
    """CG (NEG §3.1): the computational gradient dF/da."""
    query, acts, grads = _single(lm, question, target, layers, site, chat, readout)
    return _result(grads, "grad", site, query, target, layers=layers)


@register("grad_x_act")
def grad_x_act(lm: LM, question, target: str = "answer_prob", layers=None, site: str = "ffn.mid", chat: bool = False,
               readout: str | None = None) -> NeuronScores:
    """Gradient x activation: a * dF/da (the one-step, alpha = 1 special case of IG)."""
    query, acts, grads = _single(lm, question, target, layers, site, chat, readout)
    return _result(acts * grads, "grad_x_act", site, query, target, layers=layers)


@register("activation")
def activation(lm: LM, question, target: str = "answer_prob", layers=None, site: str = "ffn.mid", chat: bool = False,
               readout: str | None = None) -> NeuronScores:
    """ACT (NeuronLLM §4.3): the activation value a at the answer position (target unused)."""
    query = make_query(lm, question, chat=chat, readout=readout)
    acts = answer_position_grads(lm, query, torch.tensor([query.answer]), target, layers, site, grad=False).acts
    return _result(acts, "activation", site, query, target, layers=layers)


@register("random")
def random_scores(lm: LM, question=None, target: str = "answer_prob", seed: int = 0, site: str = "ffn.mid") -> NeuronScores:
    """RANDOM (NeuronLLM §4.3): i.i.d. uniform scores from a seeded generator, so top-k is a random set."""
    site_ = lm.site(site)
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(site_.n_layers, site_.n_inner, generator=gen)
    return NeuronScores(scores, "random", site, {"seed": seed}, {"target": str(target)})


def lpi_defined(lm: LM, site: str = "ffn.mid") -> bool:
    """Whether `lpi` is defined on `lm`: site ffn.mid enters a linear FFN output projection
    and the family has site resid.mid (not GPT-NeoX's or GPT-J's parallel attention and MLP)."""
    site_ = lm.site(site)
    return (site_.name == "ffn.mid" and isinstance(site_.module(lm.model, 0), torch.nn.Linear)
            and "resid.mid" in lm.family.sites)


@register("lpi")
@torch.no_grad()
def lpi(lm: LM, question, target: str = "answer_logprob", layers=None, site: str = "ffn.mid", chat: bool = False,
        chunk: int = 512, neurons=None) -> NeuronScores:
    """LPI, log-probability increase (Yu & Ananiadou 2024; NEG Table 2 baseline).

    For neuron i of layer l with activation a_i and output weight column v_i, at the
    answer position: LPI = log p(y | r + a_i v_i) - log p(y | r), where r is the
    residual stream entering layer l's FFN (site resid.mid: after attention, the FFN's
    own output excluded) and p(. | x) reads a residual vector directly (logit lens,
    `sites.logit_lens`: final norm, head, and Gemma 2's logit soft-capping).
    Gemma 2/3 norm the FFN output before adding it (`Family.post_ffn_norm`): there the
    neuron adds N(a_i v_i), N that norm, so LPI = log p(y | r + N(a_i v_i)) - log p(y | r);
    an RMSNorm of one vector keeps only its direction, so |a_i| no longer scales it.
    Defined where the family has site resid.mid and a linear FFN output projection
    (LLaMA, Mistral, Qwen, Gemma 1-3, Phi-3).
    neurons: flat ids to score (the others hold NaN); each costs one read-out over the
    vocabulary, so scoring every neuron of a layer costs n_inner of them.
    """
    site_, model = lm.site(site), lm.model
    if not lpi_defined(lm, site):
        raise ValueError(f"lpi needs site ffn.mid entering a linear FFN output projection and site resid.mid "
                         f"(the residual stream entering the FFN, see neuronloc.sites): {site_.family}/{site} has not; "
                         f"use it on a LLaMA-like, Gemma or Phi-3 model")
    lens = logit_lens(model)
    query = make_query(lm, question, chat=chat)
    y = int(query.answer_tokens[0])
    layers = resolve_layers(site_.n_layers, layers)
    picked = None
    if neurons is not None:
        layer_of, index_of = unflat(to_ids(neurons, site_.shape), site_.n_inner)
        picked = {l: index_of[layer_of == l] for l in layer_of.unique().tolist()}
        layers = sorted(picked)
    at = [query.position]
    with capture(model, site_, layers, positions=at) as cap, capture(model, lm.site("resid.mid"), layers, positions=at) as mid:
        model(input_ids=query.prompt[None].to(lm.device))
    resid = {l: mid.acts[l][0, 0].float() for l in layers}

    def logp(x):  # [n, d] residual vectors -> log p(y)
        logits = lens(x.to(lm.dtype)).float()
        return logits[:, y] - torch.logsumexp(logits, dim=-1)

    scores = torch.full((site_.n_layers, site_.n_inner), float("nan"))
    for l in layers:
        a = cap.acts[l][0, 0].float()
        w = site_.module(model, l).weight.float()  # [d, n_inner]: column i is neuron i's value vector
        post = post_ffn_norm(model, l)
        base = logp(resid[l][None])
        units = torch.arange(site_.n_inner) if picked is None else picked[l]
        out = []
        for s in range(0, len(units), chunk):
            u = units[s:s + chunk].to(a.device)
            added = a[u, None] * w[:, u].T  # [units, d]: what each neuron alone adds to the FFN output
            if post is not None:
                added = post(added.to(lm.dtype)).float()
            vecs = resid[l][None] + added
            out.append(logp(vecs) - base)
        scores[l, units] = torch.cat(out).cpu()
    return _result(scores, "lpi", site, query, target, layers=layers)
