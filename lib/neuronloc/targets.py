"""Target functions F used by attribution, all read at the answer position.

Every target maps next-token logits `[batch, vocab]`, the token each row should
score `[batch]` and the option-label tokens `[n_options]` (or None) to `[batch]`.

option_prob    (ACE, NeuronLLM Eq. 3): softmax over the option-label logits only,
               value at the row's answer: exp(-cross-entropy) over the options.
answer_prob    (QRNCA, KN, NEG): softmax over the whole vocabulary, value at the answer.
prob_margin    (TN): P(answer) - mean P(wrong option), vocabulary softmax.
answer_logprob (NeuronLLM Eq. 2, CNL Eq. 7 teacher forcing): log P(answer) over
               the vocabulary; scorers sum it over the tokens of a multi-token answer.
"""
from __future__ import annotations

from typing import Callable

import torch

Target = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def _need_options(name: str, options) -> torch.Tensor:
    if options is None:
        raise ValueError(f"target {name!r} needs the option-label tokens (a multiple-choice question)")
    return options


def option_prob(logits: torch.Tensor, answer: torch.Tensor, options: torch.Tensor | None) -> torch.Tensor:
    options = _need_options("option_prob", options)
    probs = torch.softmax(logits[:, options].float(), dim=-1)  # [batch, n_options]
    hit = answer[:, None] == options[None, :]
    if not bool(hit.any(dim=1).all()):
        raise ValueError("option_prob: every row's answer token must be one of the option tokens")
    return (probs * hit).sum(dim=1)


def answer_prob(logits: torch.Tensor, answer: torch.Tensor, options: torch.Tensor | None = None) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1).gather(1, answer[:, None])[:, 0]


def answer_logprob(logits: torch.Tensor, answer: torch.Tensor, options: torch.Tensor | None = None) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1).gather(1, answer[:, None])[:, 0]


def prob_margin(logits: torch.Tensor, answer: torch.Tensor, options: torch.Tensor | None) -> torch.Tensor:
    options = _need_options("prob_margin", options)
    probs = torch.softmax(logits.float(), dim=-1)[:, options]  # vocabulary softmax, [batch, n_options]
    hit = (answer[:, None] == options[None, :]).to(probs.dtype)
    wrong = (probs * (1 - hit)).sum(dim=1) / (1 - hit).sum(dim=1)
    return (probs * hit).sum(dim=1) - wrong


# Targets that read only the option-label logits: scorers may compute just those
# (`attribution.base.head_rows`) and pass logits `[batch, n_options]`, options = arange(n).
OPTION_LOGITS_ONLY = (option_prob,)

TARGETS: dict[str, Target] = {
    "option_prob": option_prob,
    "answer_prob": answer_prob,
    "prob_margin": prob_margin,
    "answer_logprob": answer_logprob,
}


def get_target(target: str | Target) -> Target:
    if callable(target):
        return target
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[target]
