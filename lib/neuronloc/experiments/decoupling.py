"""Notebook 02, CNL §4: decoupling, compute a+b vs write Python for a+b.

  greedy_correct  whether the model's greedy output after a sub-sample's prompt is its gold
                  answer (what the attributions of §4 are about)
"""
from __future__ import annotations

import torch

from ..localization.validation import answer_top1
from ..models import LM
from ..tasks import continuation_ids


def greedy_correct(lm: LM, prompt: str, answer: str) -> bool:
    """Whether greedy decoding after `prompt` starts with `answer`, tokenized as its
    continuation (`tasks.continuation_ids`): every answer token is the top-1 token under
    teacher forcing (`answer_top1`)."""
    ids = torch.tensor(lm.tokenizer(prompt)["input_ids"])
    return answer_top1(lm, ids, torch.tensor(continuation_ids(lm.tokenizer, prompt, answer)))
