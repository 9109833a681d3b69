"""What every scorer shares: the query, the result type, the registry, the KV-cache helpers.

A scorer is `fn(lm, question, target="...", **params) -> NeuronScores` and is
registered by name, so notebooks and the CLI pick methods by name (cf. Captum).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..models import LM
from ..sites import Site
from ..tasks.core import MCQuestion, label_token_ids, render


@dataclass
class NeuronScores:
    """Scores of every neuron: `scores` is `[layer, neuron]` (float32, CPU).

    Layers that a scorer skipped (`layers=` parameter) hold NaN.
    """

    scores: torch.Tensor
    method: str
    site: str
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        assert self.scores.ndim == 2, f"scores must be [layer, neuron], got {tuple(self.scores.shape)}"

    @property
    def n_layers(self) -> int:
        return self.scores.shape[0]

    @property
    def n_inner(self) -> int:
        return self.scores.shape[1]

    def top(self, k: int, largest: bool = True) -> torch.Tensor:
        """Flat ids (layer * n_inner + index) of the k highest (or lowest) scores."""
        flat = torch.nan_to_num(self.scores.flatten(), nan=float("-inf") if largest else float("inf"))
        return torch.topk(flat, k, largest=largest).indices


@dataclass(frozen=True)
class Query:
    """A question as token ids, ready for attribution.

    input_ids `[seq]`: the prompt, plus the answer tokens but the last (teacher forcing).
    position: the answer position (the last prompt token), where neurons are edited.
    answer `[n_answer]`: the tokens predicted at positions position .. position + n_answer - 1.
    options `[n_options]` or None: option-label token ids (multiple choice).
    """

    input_ids: torch.Tensor
    position: int
    answer: torch.Tensor
    options: torch.Tensor | None = None
    uid: str = ""

    @property
    def prefix(self) -> torch.Tensor:
        return self.input_ids[: self.position]

    @property
    def suffix(self) -> torch.Tensor:
        return self.input_ids[self.position:]


def make_query(lm: LM, question, chat: bool = False, answer_option: int | None = None) -> Query:
    """Query for an MCQuestion (answer = its label token, or option `answer_option`),
    an object with `prompt` and `answer` strings (free-form, teacher forced), or a Query."""
    if not lm.model.can_generate():
        raise ValueError(f"{lm.model.config.model_type!r} is not a causal LM: attribution reads the next-token "
                         "logits at the answer position; masked-LM read-out is not supported (sites and hooks are)")
    if isinstance(question, Query):
        return question
    tok = lm.tokenizer
    if isinstance(question, MCQuestion):
        prompt = render(question, tok, chat=chat)
        options = label_token_ids(tok, prompt, question.labels)
        ids = tok(prompt, add_special_tokens=True)["input_ids"]
        pick = question.answer if answer_option is None else answer_option
        return Query(torch.tensor(ids), len(ids) - 1, torch.tensor([options[pick]]), torch.tensor(options), question.uid)
    prompt, answer = question.prompt, question.answer
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    sep = "" if not prompt or prompt[-1].isspace() or answer[:1].isspace() else " "
    full = tok(prompt + sep + answer, add_special_tokens=True)["input_ids"]
    if full[: len(ids)] != ids or len(full) == len(ids):
        raise ValueError(f"answer {answer!r} does not tokenize as a continuation of its prompt")
    answer_ids = full[len(ids):]
    return Query(torch.tensor(full[:-1]), len(ids) - 1, torch.tensor(answer_ids), None, getattr(question, "uid", ""))


# ----------------------------------------------------------------------- registry

SCORERS: dict[str, Callable[..., NeuronScores]] = {}


def register(name: str):
    def deco(fn):
        SCORERS[name] = fn
        return fn
    return deco


def attribute(method: str, lm: LM, question, target: str = "answer_prob", **params) -> NeuronScores:
    """Run the scorer registered as `method` (see `SCORERS`)."""
    if method not in SCORERS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(sorted(SCORERS))}")
    return SCORERS[method](lm, question, target=target, **params)


# ----------------------------------------------------------------------- KV cache

@torch.no_grad()
def prefix_cache(lm: LM, prefix: torch.Tensor):
    """Run the prompt prefix once; its KV cache (batch 1), or None for an empty prefix."""
    if prefix.numel() == 0:
        return None
    out = lm.model(input_ids=prefix[None].to(lm.device), use_cache=True, **logits_from(lm.model, 1))
    return out.past_key_values


def logits_from(model, last: int) -> dict:
    """Forward kwargs that run the LM head on the `last` positions only, where the model
    supports it: no logits are read on the prefix, and the head is ~20 % of a small
    model's forward and a `[batch, seq, vocab]` tensor of memory."""
    import inspect

    return {"logits_to_keep": last} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def expand_cache(cache, batch, config=None):
    """A fresh cache holding `cache`'s keys/values broadcast to `batch` rows
    (an int, or one int per layer).

    The prefix K/V are shared (expand, no copy); each forward appends new
    positions into new tensors, so the original cache is never modified.
    """
    if cache is None:
        return None
    from transformers import DynamicCache

    fresh = DynamicCache(config=config) if config is not None else DynamicCache()
    sizes = [batch] * len(cache.layers) if isinstance(batch, int) else list(batch)
    for i, (layer, size) in enumerate(zip(cache.layers, sizes)):
        fresh.update(layer.keys[:1], layer.values[:1], i)
        fresh.layers[i].keys = layer.keys.expand(size, -1, -1, -1)
        fresh.layers[i].values = layer.values.expand(size, -1, -1, -1)
        if hasattr(layer, "cumulative_length"):  # sliding window: holds the last tokens of a longer prefix
            fresh.layers[i].cumulative_length = layer.cumulative_length
    return fresh


@contextmanager
def cached_rows(lm: LM, cache, sizes, new: int):
    """`past_key_values` for running batch rows of `new` positions after the prefix
    `cache` (batch 1).

    Where the family supports it, rows attend to the one shared prefix by
    broadcasting (`prefix_attention`); otherwise the prefix is expanded to `sizes` rows
    (an int, or one per layer) and concatenated per row.
    """
    from . import prefix_attention

    if cache is not None and prefix_attention.supported(lm, cache.get_seq_length() + new):
        with prefix_attention.shared_prefix(lm, cache) as past:
            yield past
    else:
        yield expand_cache(cache, sizes, lm.model.config)


@contextmanager
def head_rows(lm: LM, tokens: torch.Tensor | None):
    """Inside the block the LM head computes only the logits of `tokens` (`[n]`):
    logits[..., j] is the logit of tokens[j]. A read-out over 4 option labels then
    skips the [rows, vocab] head and its backward (~1/3 of the fast IG path on a
    small model). tokens=None: the full head."""
    head = lm.model.get_output_embeddings()
    name = next((n for n, m in lm.model.named_children() if m is head), None)
    # keep the full head where swapping it is not plain: accelerate-dispatched heads carry device hooks
    if tokens is None or name is None or not isinstance(head, torch.nn.Linear) or hasattr(head, "_hf_hook"):
        yield False
        return
    rows = tokens.to(head.weight.device)
    sub = torch.nn.Linear(head.in_features, len(rows), bias=head.bias is not None,
                          device=head.weight.device, dtype=head.weight.dtype)
    sub.weight = torch.nn.Parameter(head.weight[rows], requires_grad=False)
    if head.bias is not None:
        sub.bias = torch.nn.Parameter(head.bias[rows], requires_grad=False)
    setattr(lm.model, name, sub)
    try:
        yield True
    finally:
        setattr(lm.model, name, head)


def resolve_layers(site: Site, layers) -> list[int]:
    return list(range(site.n_layers)) if layers is None else sorted(int(l) for l in layers)
