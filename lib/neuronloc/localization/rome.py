"""ROME rank-one model editing (Meng et al. 2022 §3; the CNL paper's causal-tracing
reliability test, CNL §3 / Fig. 2: edit at each layer in turn, efficacy per layer).

The MLP down-projection W of one layer (the module whose input is the site `ffn.mid`)
is treated as a linear key-value memory, W k = v (bias aside):
  key    k* = the down-projection input at the subject's last token of the edited
         prompt (with `prefixes`: the mean over the prompt and the prompt after each
         prefix, ROME's context templates).
  value  v* = W k* + delta, delta optimised by gradient descent (added to the MLP output
         at the subject's last token) so that the new object becomes likely:
         loss = NLL(new object | prompt) (teacher forced, mean over its tokens and prompts)
              + kl_weight * KL(P(. | "{subject} is a") unedited || edited)  (ROME's essence term)
              + weight_decay * |delta|^2 / |v0|^2,  |delta| clamped to clamp * |v0|
         (v0: the MLP output there; ROME's defaults: lr 0.5, kl 0.0625, clamp 4).
  update W <- W + (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*), so W_new k* = v* exactly and
         keys orthogonal to C^-1 k* in C's metric are left alone (ROME Eq. 2). C = E[k k^T],
         the second moment of the keys over a text corpus, + ridge * mean(diag C) * I.

Key covariance corpus ("counterfact", default): the CounterFact *train* split of the data
mirror (counterfact_mend/counterfact-train.json; disjoint from the "edit" split the
notebooks edit), each record read as three short English sentences: prompt + true object,
the rephrased prompt, the locality prompt + its object. "gsm8k": GSM8K train questions.
Or a list of strings. C is cached per (model, layer, corpus, n_texts, max_tokens) in a
`Store`. ROME used 100,000 Wikipedia samples; the mirror has no Wikipedia text.

Families: every family whose ffn.mid is a down-projection's input. The value is that
projection's output (`value_site`): the MLP output, or for Gemma 2/3 what their
post_feedforward_layernorm norms before the residual add (delta is optimised through the
norm). GPT-2's Conv1D stores W as [in, out].

Cost per edit: covariance (once per layer and corpus, cached): n_texts / 16 batched
forwards; key: 1 forward per prompt; value: steps x one batched forward and backward of
the prompts and the essence prompt (`_value_loss`); the update itself: one linear solve of size n_inner.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..configs import RomeParams
from ..data import read_records
from ..engine import logits_from
from ..hooks import Edit, capture, intervene
from ..models import LM
from ..sites import Site, UnsupportedModelError
from ..store import Store, key
from .facts import Fact, make_fact, padded_logprobs, subject_span

CORPORA = ("counterfact", "gsm8k")


@dataclass
class RomeEdit:
    """A rank-one edit of layer `layer`'s down-projection: W <- W + r u^T in [out, in]
    orientation. u `[n_inner]` = C^-1 k* / ((C^-1 k*)^T k*); r `[d_model]` = v* - W k*.
    key k* `[n_inner]`, value v* `[d_model]` (W_new k* = v*)."""

    layer: int
    u: torch.Tensor
    r: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    params: dict = field(default_factory=dict)

    @property
    def delta(self) -> torch.Tensor:
        """The weight change `[d_model, n_inner]` ([out, in] orientation)."""
        return torch.outer(self.r, self.u)


# ------------------------------------------------------------------ the matrix

def down_proj(lm: LM, layer: int) -> tuple[nn.Parameter, bool]:
    """The down-projection weight of `layer` and whether it is stored [in, out] (GPT-2 Conv1D)."""
    site = lm.site("ffn.mid")
    if site.kind != "input":
        raise UnsupportedModelError(
            f"ROME edits the MLP down-projection, the module whose input is the site ffn.mid; in "
            f"{lm.family.name!r} ffn.mid is the output of {site.module_path}, not a projection's input")
    module = site.module(lm.model, layer)
    weight = module.weight
    if isinstance(module, nn.Linear):
        return weight, False
    if weight.shape[0] == site.n_inner:
        return weight, True
    raise UnsupportedModelError(f"cannot tell the orientation of {type(module).__name__}'s weight {tuple(weight.shape)}")


def value_site(lm: LM) -> Site:
    """Where ROME's value lives: the down-projection's output, d_model at each layer. It is the
    MLP output (site mlp.out) in every family but Gemma 2/3, whose post_feedforward_layernorm
    norms it before the residual add: there delta is optimised through that norm, and
    W_new k* = v* still holds at the projection, so the edited model computes what the
    optimisation saw."""
    mid = lm.site("ffn.mid")
    d_model = lm.site("mlp.out").n_inner
    return Site("ffn.out", mid.family, mid.layers_path, mid.module_path, "output", mid.n_layers, d_model)


@contextmanager
def applied(lm: LM, edit: RomeEdit):
    """Inside the block the model carries the edit; the weight is restored exactly on exit
    (also when the body raises)."""
    weight, in_out = down_proj(lm, edit.layer)
    saved = weight.detach().clone()
    delta = edit.delta.to(weight.device, weight.dtype)
    try:
        with torch.no_grad():
            weight.add_(delta.T if in_out else delta)
        yield lm
    finally:
        with torch.no_grad():
            weight.copy_(saved)


# ------------------------------------------------------------------ key covariance

def corpus_texts(corpus: str | Sequence[str] = "counterfact", n_texts: int = 1000) -> list[str]:
    """The first n_texts texts of a named corpus (see the module docstring), or the given list."""
    if not isinstance(corpus, str):
        return list(corpus)[:n_texts]
    if corpus == "counterfact":
        texts = []
        for r in read_records("counterfact_mend/counterfact-train.json",
                              ("prompt", "ground_truth", "rephrase_prompt", "locality_prompt", "locality_ground_truth")):
            texts += [f"{r['prompt']} {r['ground_truth']}.", r["rephrase_prompt"],
                      f"{r['locality_prompt']} {r['locality_ground_truth']}."]
            if len(texts) >= n_texts:
                break
        return texts[:n_texts]
    if corpus == "gsm8k":
        return [r["question"] for r in read_records("gsm8k/train.jsonl", ("question",))[:n_texts]]
    raise ValueError(f"unknown corpus {corpus!r}; use one of {', '.join(CORPORA)} or pass a list of texts")


@torch.no_grad()
def key_moments(lm: LM, layers, corpus: str | Sequence[str] = "counterfact", n_texts: int = 1000,
                max_tokens: int = 64, store: Store | None = None, batch_size: int = 16,
                progress: bool = False) -> dict[int, torch.Tensor]:
    """C = E[k k^T] of the down-projection inputs k over every token of the corpus texts:
    {layer: `[n_inner, n_inner]` float32}. Cached per layer in `store`; the missing layers
    are computed in one pass over the corpus."""
    texts = corpus_texts(corpus, n_texts)
    if not texts:
        raise ValueError("the key-covariance corpus is empty: pass a corpus with at least one text")
    name = corpus if isinstance(corpus, str) else {"texts": texts}
    keys = {l: key(model=lm, kind="rome_key_moments", layer=l, corpus=name, n_texts=n_texts, max_tokens=max_tokens)
            for l in layers}
    out = {l: store.get(k) for l, k in keys.items()} if store is not None else {l: None for l in layers}
    todo = [l for l, c in out.items() if c is None]
    if todo:
        site = lm.site("ffn.mid")
        sums = {l: torch.zeros(site.n_inner, site.n_inner, dtype=torch.float64) for l in todo}
        count = 0
        for start in tqdm(range(0, len(texts), batch_size), desc="key covariance", disable=not progress, leave=False):
            rows = [lm.tokenizer(t, add_special_tokens=True)["input_ids"][:max_tokens] for t in texts[start:start + batch_size]]
            width = max(map(len, rows))
            # right padding: a causal model's real positions never see the pads, and keep their positions
            ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows])
            real = torch.tensor([[i < len(r) for i in range(width)] for r in rows])
            with capture(lm.model, site, todo, positions="all") as cap:
                lm.model(input_ids=ids.to(lm.device), **logits_from(lm.model, 1))
            for l in todo:
                k = cap.acts[l].cpu().double()[real]  # [tokens, n_inner]
                sums[l] += k.T @ k
            count += int(real.sum())
        for l in todo:
            out[l] = (sums[l] / count).float()
            if store is not None:
                store.put(keys[l], out[l])
    return out


# ------------------------------------------------------------------ the edit

def _variants(lm: LM, fact, subject, new: str | None, prefixes: Sequence[str]) -> list[Fact]:
    """The edited prompt (answer = the new object) and, with prefixes, the prompt after each."""
    if isinstance(fact, Fact):
        if prefixes:
            raise ValueError("prefixes need the fact as text (prompt=, subject=, new object=), not a tokenized Fact")
        return [fact]
    prompt = fact if isinstance(fact, str) else fact.prompt
    if subject is None and not isinstance(fact, str):
        subject = (getattr(fact, "meta", None) or {}).get("subject")
    if new is None and not isinstance(fact, str):
        new = (getattr(fact, "meta", None) or {}).get("target_new")
    return [make_fact(lm, p + prompt, subject, new) for p in ("", *prefixes)]


def _keys(lm: LM, facts: list[Fact], layers: Sequence[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (mean down-projection input k* `[n_inner]`, the edited prompt's MLP output v0
    `[d_model]`)} at the subject's last token, every layer read from one forward per prompt."""
    layers = list(layers)
    ks = {l: [] for l in layers}
    for i, f in enumerate(facts):
        with torch.no_grad(), capture(lm.model, lm.site("ffn.mid"), layers, positions=[f.subject_last]) as k, \
                capture(lm.model, value_site(lm), layers, positions=[f.subject_last]) as v:
            lm.model(input_ids=f.prompt[None].to(lm.device), **logits_from(lm.model, 1))
        for l in layers:
            ks[l].append(k.acts[l][0, 0].double())
        if i == 0:
            v0 = {l: v.acts[l][0, 0].double() for l in layers}
    return {l: (torch.stack(ks[l]).mean(0).cpu(), v0[l].cpu()) for l in layers}


def _essence_logprobs(lm: LM, ids: torch.Tensor, position: int, layer: int, delta) -> torch.Tensor:
    edits = [] if delta is None else [Edit(layer, None, "add", delta, positions=[position])]
    with intervene(lm.model, value_site(lm), edits):
        logits = lm.model(input_ids=ids[None].to(lm.device), **logits_from(lm.model, 1)).logits[0, -1]
    return logits.double().log_softmax(-1)


def _value_loss(lm: LM, facts: list[Fact], essence, layer: int, delta: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """ROME's value loss: the mean over facts of -log P(new object | prompt) (teacher forced,
    mean over its tokens, delta added at the subject's last token) + kl_weight *
    KL(before || after) of the essence prompt (`essence` = (ids, position, unedited
    log-probs), or None). All rows run in one forward (`padded_logprobs`), delta added at
    each row's own position."""
    return _value_losses(lm, facts, essence, [layer], [delta], kl_weight)[0]


def _value_losses(lm: LM, facts: list[Fact], essence, layers: Sequence[int], deltas: Sequence[torch.Tensor],
                  kl_weight: float) -> torch.Tensor:
    """`_value_loss` of each (layer, delta) pair `[len(layers)]`, all in one forward: the rows
    of `_value_loss` once per pair, pair g's delta added to its own rows at its own layer (rows
    are independent, so each loss and its gradient are those of the pair run alone)."""
    rows = [(torch.cat([f.prompt, f.answer[:-1]]), f.subject_last, len(f.prompt) - 1) for f in facts]
    if essence is not None:
        rows.append((essence[0], essence[1], len(essence[0]) - 1))
    first, n = min(read for _, _, read in rows), len(rows)
    edits = [Edit(layer, None, "add", delta, rows=[g * n + i], positions=[at])
             for g, (layer, delta) in enumerate(zip(layers, deltas)) for i, (_, at, _) in enumerate(rows)]
    with intervene(lm.model, value_site(lm), edits):
        lp = padded_logprobs(lm, [ids for ids, _, _ in rows] * len(layers), first)
    losses = []
    for g in range(len(layers)):
        nll = torch.stack([-lp[g * n + i, torch.arange(len(f.answer)) + len(f.prompt) - 1 - first, f.answer.to(lp.device)].mean()
                           for i, f in enumerate(facts)]).mean()
        if essence is not None:
            before, after = essence[2], lp[g * n + len(facts), len(essence[0]) - 1 - first]
            nll = nll + kl_weight * (before.exp() * (before - after)).sum()
        losses.append(nll)
    return torch.stack(losses)


def rome_edit(lm: LM, fact, layer: int, subject: str | range | None = None, new: str | None = None,
              prefixes: Sequence[str] = (), corpus: str | Sequence[str] = "counterfact", n_texts: int = 1000,
              store: Store | None = None, cov: torch.Tensor | None = None, params: RomeParams = RomeParams(),
              **overrides) -> RomeEdit:
    """The ROME edit that makes `new` the answer of the fact's prompt at `layer`.

    fact: the prompt text (with subject= and new=), an example with meta["subject"] and
    meta["target_new"] (load_examples("counterfact")), or a Fact whose answer is the new
    object. cov: a precomputed C `[n_inner, n_inner]` (else `key_moments` of the corpus).
    params: the optimisation and update (`configs.RomeParams`: steps, lr, kl_weight,
    weight_decay, clamp, ridge); `overrides` replace its fields (`rome_edit(..., steps=50)`).
    Apply with `with applied(lm, edit): ...`.
    """
    return rome_edits(lm, fact, [layer], subject, new, prefixes, corpus, n_texts, store,
                      None if cov is None else {layer: cov}, params, **overrides)[0]


def rome_edits(lm: LM, fact, layers: Sequence[int], subject: str | range | None = None, new: str | None = None,
               prefixes: Sequence[str] = (), corpus: str | Sequence[str] = "counterfact", n_texts: int = 1000,
               store: Store | None = None, covs: dict | None = None, params: RomeParams = RomeParams(),
               **overrides) -> list[RomeEdit]:
    """`rome_edit` of the same fact at each of `layers` (one edit per layer, each to be applied
    alone), the value optimisations run together: each step is one forward and backward of
    every layer's rows (`_value_losses`) and one Adam step over the layers' deltas (Adam is
    per element, so each delta follows its own run up to rounding). A small model's rows are
    bound by reading the weights, so 4 layers cost about what one did. covs: {layer: C}."""
    params = replace(params, **overrides) if overrides else params
    steps, lr, kl_weight, weight_decay, clamp, ridge = (params.steps, params.lr, params.kl_weight, params.weight_decay,
                                                         params.clamp, params.ridge)
    layers = list(layers)
    facts = _variants(lm, fact, subject, new, prefixes)
    keys = list(_keys(lm, facts, layers).values())  # (k*, v0) per layer
    # value: delta on the MLP output at the subject's last token
    deltas = [torch.zeros(v0.shape[0], dtype=lm.dtype, device=lm.device, requires_grad=True) for _, v0 in keys]
    opt = torch.optim.Adam(deltas, lr=lr)
    essence = None
    text_subject = subject if isinstance(subject, str) else (
        (getattr(fact, "meta", None) or {}).get("subject") if not isinstance(fact, (str, Fact)) else None)
    if kl_weight and text_subject:
        prompt = f"{text_subject} is a"
        ids = torch.tensor(lm.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        position = subject_span(lm.tokenizer, prompt, text_subject)[-1]
        with torch.no_grad():  # the unedited model: the same for every layer
            essence = (ids, position, _essence_logprobs(lm, ids, position, layers[0], None))
    norms = [float(v0.norm()) for _, v0 in keys]
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            losses = _value_losses(lm, facts, essence, layers, deltas, kl_weight)
            losses = losses + torch.stack([weight_decay * d.double().pow(2).sum() / n0 ** 2 for d, n0 in zip(deltas, norms)])
            losses.sum().backward()
            opt.step()
            with torch.no_grad():
                for d, n0 in zip(deltas, norms):
                    n = d.norm()
                    if n > clamp * n0:
                        d.mul_(clamp * n0 / n)
    if covs is None:  # every layer's key second moment from one pass over the corpus (cached per layer)
        covs = key_moments(lm, layers, corpus, n_texts, store=store)
    edits = []
    for layer, (k, _), delta, loss in zip(layers, keys, deltas, losses.detach()):
        weight, in_out = down_proj(lm, layer)
        W = (weight.T if in_out else weight).detach().double().cpu()  # [out, in]
        # ROME Eq. 2: W_new = W + (v* - W k*) (C^-1 k*)^T / ((C^-1 k*)^T k*)
        C = covs[layer].double().cpu()
        C = C + ridge * C.diagonal().mean() * torch.eye(len(C), dtype=C.dtype)
        c_inv_k = torch.linalg.solve(C, k)
        u = c_inv_k / (c_inv_k @ k)
        value = W @ k + delta.detach().double().cpu()
        r = value - W @ k
        record = dict(layer=layer, **asdict(params), corpus=corpus if isinstance(corpus, str) else "texts",
                      n_texts=n_texts, prefixes=list(prefixes), final_loss=float(loss))
        edits.append(RomeEdit(layer, u, r, k, value, record))  # float64: W_new k* = v* to the weight's precision
    return edits
