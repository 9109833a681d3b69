"""Target functions F used by attribution, read from option scores.

The answer engine (`neuronloc.engine`) reads, for each condition (a batch row group),
one log-score per option: the vocabulary log-probability of the option under the
question's read-out (letter: of its label token; cloze: of its text, summed over its
tokens; cloze_norm: per character; pmi: minus its content-free prior). A free-form
example has one "option", its answer. Every target maps scores `[rows, n_options]` and
the option each row scores `[rows]` to `[rows]`:

option_prob    (ACE, NeuronLLM Eq. 3): softmax over the option scores, value at the
               answer: exp(-cross-entropy) over the options.
answer_prob    (QRNCA, KN, NEG): exp(score) of the answer, its vocabulary probability
               (for cloze: the probability of the whole answer text).
prob_margin    (TN): P(answer) - mean P(wrong option), vocabulary probabilities.
answer_logprob (NeuronLLM Eq. 2, CNL Eq. 7 teacher forcing): the answer's score, its
               summed log-probability.
"""
from __future__ import annotations

from typing import Callable

import torch

Target = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _pick(scores: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    return scores.gather(1, answer.to(scores.device)[:, None])[:, 0]


def option_prob(scores: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    if scores.shape[1] < 2:
        raise ValueError("target 'option_prob' needs a multiple-choice question (two or more options)")
    return _pick(torch.softmax(scores, dim=-1), answer)


def answer_prob(scores: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    return _pick(scores, answer).exp()


def answer_logprob(scores: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    return _pick(scores, answer)


def prob_margin(scores: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    if scores.shape[1] < 2:
        raise ValueError("target 'prob_margin' needs a multiple-choice question (two or more options)")
    probs = scores.exp()
    hit = torch.zeros_like(probs).scatter_(1, answer.to(probs.device)[:, None], 1.0)
    wrong = (probs * (1 - hit)).sum(dim=1) / (1 - hit).sum(dim=1)
    return (probs * hit).sum(dim=1) - wrong


# Targets that depend only on differences of the option scores: the engine may pass
# raw option logits (a per-row constant away from log-probabilities) and skip the
# vocabulary head (`engine.head_rows`).
SHIFT_INVARIANT = (option_prob,)

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
