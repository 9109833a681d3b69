"""A fact as token ids, shared by causal tracing, ROME and knowledge circuits.

A fact is a prompt that names a subject ("The Eiffel Tower is located in the city of")
and an answer (" Paris"). The three CNL baselines read P(answer's first token | prompt)
at the prompt's last position (as ROME does); the subject's tokens are where causal
tracing corrupts and where ROME reads its key.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import LM
from ..tasks.core import TaskError, continuation_ids


@dataclass(frozen=True)
class Fact:
    """prompt `[n]` token ids; subject: the subject's token positions (a range inside the
    prompt); answer: the answer's token ids `[k]` (read: its first token, `target`)."""

    prompt: torch.Tensor
    subject: range
    answer: torch.Tensor

    def __post_init__(self):
        if self.prompt.ndim != 1 or self.prompt.numel() == 0:
            raise TaskError("a fact needs a non-empty 1-d prompt of token ids")
        if len(self.subject) == 0 or self.subject.start < 0 or self.subject.stop > len(self.prompt):
            raise TaskError(f"subject positions {self.subject} are not a non-empty span of the "
                            f"{len(self.prompt)}-token prompt")
        if self.answer.numel() == 0:
            raise TaskError("a fact needs at least one answer token")

    @property
    def target(self) -> int:
        """The answer token read at the last prompt position."""
        return int(self.answer[0])

    @property
    def subject_last(self) -> int:
        return self.subject.stop - 1


def make_fact(lm: LM, prompt, subject: str | range | None = None, answer: str | None = None) -> Fact:
    """Tokenize a fact.

    prompt: a string, or an example with `prompt`, `answer` and `meta["subject"]`
    (e.g. `load_examples("counterfact")`), or a Fact (returned as is). subject: its text
    (must occur in the prompt; the last occurrence is used) or its token positions.
    answer: the answer text (tokenized as a continuation of the prompt).
    The subject's tokens are those covering its characters: the tokens of
    prompt[:subject end] minus those of prompt[:subject start] without trailing spaces.
    """
    if isinstance(prompt, Fact):
        return prompt
    if not isinstance(prompt, str):
        example = prompt
        prompt = example.prompt
        answer = example.answer if answer is None else answer
        if subject is None:
            subject = (getattr(example, "meta", None) or {}).get("subject")
    if subject is None or answer is None:
        raise TaskError("a fact needs a subject and an answer: pass subject= and answer= "
                        "(or an example with meta['subject'], as load_examples('counterfact') gives)")
    tok = lm.tokenizer
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    if isinstance(subject, str):
        subject = subject_span(tok, prompt, subject)
    return Fact(torch.tensor(ids), subject, torch.tensor(continuation_ids(tok, prompt, answer)))


def subject_span(tok, prompt: str, subject: str) -> range:
    """Token positions of the last occurrence of `subject` in `prompt` (see `make_fact`)."""
    start = prompt.rfind(subject)
    if start < 0:
        raise TaskError(f"subject {subject!r} does not occur in the prompt {prompt!r}")
    # a space before the subject is part of its first token in BPE vocabularies (" Paris")
    lo = len(tok(prompt[:start].rstrip(), add_special_tokens=True)["input_ids"])
    hi = len(tok(prompt[:start + len(subject)], add_special_tokens=True)["input_ids"])
    return range(min(lo, hi - 1), hi)


@torch.no_grad()
def last_probs(lm: LM, ids: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Next-token probabilities at the last position of `rows` copies of `ids` `[n]`
    (run inside the caller's hooks): `[rows, vocab]`."""
    from ..engine import logits_from

    batch = ids[None].expand(rows, -1).to(lm.device)
    logits = lm.model(input_ids=batch, **logits_from(lm.model, 1)).logits[:, -1]
    return logits.double().softmax(-1)


def padded_logprobs(lm: LM, rows: list[torch.Tensor], first: int) -> torch.Tensor:
    """Log-probabilities (float64) of the next token at positions `first` on of `rows`
    (token ids `[n_i]`), run as one batch right padded to the longest row (run inside the
    caller's hooks; a causal model's real positions never see the padding): `[rows, width -
    first, vocab]`, position t of a row at index t - first. One read of the weights for all
    rows, where a CPU pays for each small forward's weight reads."""
    from ..engine import logits_from

    width = max(len(r) for r in rows)
    batch = torch.stack([torch.cat([r, r.new_full((width - len(r),), int(r[0]))]) for r in rows])
    keep = width - first
    logits = lm.model(input_ids=batch.to(lm.device), **logits_from(lm.model, keep)).logits[:, -keep:]
    return logits.double().log_softmax(-1)


def paraphrase_groups(lm: LM, examples, n_paraphrases: int, n_facts: int | None = None,
                      known: bool = True) -> list[list]:
    """The paraphrase sets of CNL §3.1: examples grouped by meta["fact"] (the prompts of one
    fact, e.g. `load_examples("pararel/P36")`), in input order.

    Keeps facts with at least n_paraphrases prompts that name the subject (meta["subject"]),
    cut to their first n_paraphrases; with known=True only facts whose first prompt the model
    answers (the answer's first token is its top-1 next token: one forward per fact). Up to
    n_facts groups.
    """
    groups: dict = {}
    for ex in examples:
        groups.setdefault(ex.meta["fact"], []).append(ex)
    out = []
    for group in groups.values():
        if n_facts is not None and len(out) >= n_facts:
            break
        usable = [ex for ex in group if ex.meta.get("subject") and ex.meta["subject"] in ex.prompt]
        if len(usable) < n_paraphrases:
            continue
        usable = usable[:n_paraphrases]
        if known:
            fact = make_fact(lm, usable[0])
            if int(last_probs(lm, fact.prompt)[0].argmax()) != fact.target:
                continue
        out.append(usable)
    return out
