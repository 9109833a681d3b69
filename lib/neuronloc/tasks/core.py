"""Multiple-choice questions, tasks, prompt rendering and the QATT transform.

Every experiment in the three papers reads a model's answer from the next-token
logits over single-token option labels (" A", " B", ...). `MCQuestion` is that
unit; `Task` is a named list of them plus the instruction shared by the task.

QATT (NeuronLLM §3.3) turns an example into 3 *proxies*: the same question with
its 4 options shuffled (correct answer preserved) and a one-shot demonstration.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Sequence

LETTERS = ("A", "B", "C", "D", "E", "F", "G", "H", "I", "J")
# How an answer is read (see neuronloc.engine): the option's letter, or the option's text
# scored by log-likelihood (raw, per character, or calibrated by a content-free prompt).
READOUTS = ("letter", "cloze", "cloze_norm", "pmi")


class TaskError(ValueError):
    """A question or task that cannot be rendered or read out."""


@dataclass(frozen=True)
class MCQuestion:
    """One multiple-choice question.

    stem: the question text (already containing the input, e.g. the sentence).
    options: option texts; `answer` indexes the correct one.
    labels: the tokens the model answers with, one per option ("A", "B", ...).
    instruction: role + rules (NeuronLLM QATT) or task instruction (NEG).
    demonstration: an answered example shown before the question (one-shot); a
      demonstration's own `demonstration` is shown before it, so a chain of them is a
      few-shot prompt (`few_shot`: NEG §5.4, one demonstration per option).
    uid: stable id of the source example; proxies of one example share it.
    style: "mc" lists the options and the model answers with a label letter;
      "cloze" shows only the stem and the model answers with the option itself
      (KN/NEG single-token probing), so the labels are the option texts.
    readout: how the answer is read (READOUTS): "letter" reads the label token; the
      others score each option's text as the continuation of the prompt.
    """

    stem: str
    options: tuple[str, ...]
    answer: int
    labels: tuple[str, ...] = ()
    instruction: str = ""
    demonstration: "MCQuestion | None" = None
    uid: str = ""
    style: str = "mc"
    readout: str = "letter"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        object.__setattr__(self, "options", tuple(self.options))
        if self.style not in ("mc", "cloze"):
            raise TaskError(f"question style must be 'mc' or 'cloze', got {self.style!r}")
        if self.readout not in READOUTS:
            raise TaskError(f"unknown read-out {self.readout!r}; use one of {', '.join(READOUTS)}")
        if self.style == "cloze" and not self.labels:
            object.__setattr__(self, "labels", self.options)
        if not self.labels:
            object.__setattr__(self, "labels", LETTERS[: len(self.options)])
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.options) < 2:
            raise TaskError(f"question {self.uid or self.stem[:40]!r}: needs at least 2 options, got {len(self.options)}")
        if len(self.labels) != len(self.options):
            raise TaskError(f"question {self.uid or self.stem[:40]!r}: {len(self.labels)} labels for {len(self.options)} options")
        if len(set(self.options)) < len(self.options):
            twice = sorted({o for o in self.options if self.options.count(o) > 1})
            raise TaskError(f"question {self.uid or self.stem[:40]!r}: duplicate options {twice}; every option must differ")
        if isinstance(self.answer, bool) or not hasattr(self.answer, "__index__"):  # True would silently mean option 1
            raise TaskError(f"question {self.uid or self.stem[:40]!r}: answer must be an int option index, got {self.answer!r}")
        object.__setattr__(self, "answer", self.answer.__index__())  # a numpy int becomes an int
        if not 0 <= self.answer < len(self.options):
            raise TaskError(f"question {self.uid or self.stem[:40]!r}: answer index {self.answer} out of range for {len(self.options)} options")

    @property
    def answer_label(self) -> str:
        return self.labels[self.answer]

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]

    def with_options(self, order: Sequence[int]) -> "MCQuestion":
        """The same question with options permuted: new option k = old option order[k]."""
        order = list(order)
        if sorted(order) != list(range(len(self.options))):
            raise TaskError(f"not a permutation of {len(self.options)} options: {order}")
        labels = tuple(self.labels[i] for i in order) if self.style == "cloze" else self.labels
        return replace(self, options=tuple(self.options[i] for i in order), labels=labels,
                       answer=order.index(self.answer))


@dataclass
class Task:
    """A named set of questions (and optionally a pool of demonstrations)."""

    name: str
    questions: list[MCQuestion]
    demonstrations: list[MCQuestion] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self):
        return iter(self.questions)

    def __getitem__(self, i):
        return self.questions[i]

    def with_readout(self, readout: str) -> "Task":
        """The same task read out by `readout` (questions and demonstrations)."""
        return replace(self, questions=[replace(q, readout=readout) for q in self.questions],
                       demonstrations=[replace(d, readout=readout) for d in self.demonstrations])


# --------------------------------------------------------------------------- rendering

def _body(question: MCQuestion, with_answer: bool, readout: str) -> str:
    answer = question.answer_label if readout == "letter" else question.answer_text
    if question.style == "cloze":
        return question.stem + (f" {answer}" if with_answer else "")
    if readout == "letter":
        options = "\n".join(f"{lab}. {opt}" for lab, opt in zip(question.labels, question.options))
        text = f"Question: {question.stem}\nOptions:\n{options}\nAnswer:"
    else:  # the options are the continuations scored, not listed (lm-evaluation-harness cloze form)
        text = f"Question: {question.stem}\nAnswer:"
    if with_answer:
        text += f" {answer}"
    return text


def demonstrations(question: MCQuestion) -> list[MCQuestion]:
    """The answered examples shown before `question`, first shown first: its demonstration,
    preceded by that demonstration's own demonstration, and so on (a few-shot chain)."""
    chain, demo = [], question.demonstration
    while demo is not None:
        chain.append(demo)
        demo = demo.demonstration
    return chain[::-1]


def few_shot(question: MCQuestion, pool: Sequence[MCQuestion], seed: int = 0) -> MCQuestion:
    """`question` with one demonstration per option (NEG §5.4: #demos = #options, each
    option the answer of one), drawn from `pool` and shown in a seeded random order.

    The demonstrations carry the question's instruction-free body only (the instruction
    is rendered once); a pool entry with the question's own stem is never used. A pool without a demonstration answered by some option is an error.
    """
    rng = random.Random(f"{seed}/{question.uid}")
    chosen = []
    for option in range(len(question.options)):
        fits = [d for d in pool if d.answer == option and len(d.options) == len(question.options)
                and d.stem != question.stem]  # never the question itself, answered
        if not fits:
            raise TaskError(f"few_shot: no demonstration in the pool is answered by option {option} "
                            f"({question.options[option]!r}); give a larger pool")
        chosen.append(rng.choice(fits))
    rng.shuffle(chosen)
    demo = None
    for d in chosen:  # chain: the last one chosen is shown right before the question
        demo = replace(d, instruction="", demonstration=demo, readout=question.readout)
    return replace(question, demonstration=demo)


def render(question: MCQuestion, tokenizer=None, chat: bool = False, readout: str | None = None) -> str:
    """Prompt text whose continuation is the answer.

    Plain form: instruction, the demonstrations (answered, `demonstrations`), the question, "Answer:".
    With the letter read-out (`question.readout` unless `readout` is given) the options
    are listed and the model answers with " A", " B", ... (label preceded by a space).
    With the other read-outs the options are not listed: each option's text is the
    continuation scored after "Answer:", and the demonstration is answered with its
    text (the cloze form of lm-evaluation-harness). The prompt then does not depend on
    the option order, so the QATT proxies of one example read out alike. On SmolLM2-135M
    this form is above chance on sentiment where listing the options is not (0.45 vs
    0.17 accuracy over 60 questions, 4 options).
    Chat form (`chat=True`, needs a tokenizer with a chat template): the same text
    as the user turn; the assistant turn opens with "Answer:".
    Cloze-style questions render as instruction, demonstration and stem only; the
    read-out token is the option itself (" Paris").
    """
    readout = readout or question.readout
    parts = []
    if question.instruction:
        parts.append(question.instruction.strip())
    parts += [_body(d, with_answer=True, readout=readout) for d in demonstrations(question)]
    body = _body(question, with_answer=False, readout=readout)
    if not chat:
        return "\n\n".join(parts + [body])
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        raise TaskError("chat=True needs a tokenizer with a chat template; use chat=False for this model")
    if question.style == "cloze":
        raise TaskError("cloze questions are plain continuations; render them with chat=False")
    user = "\n\n".join(parts + [body.rsplit("\nAnswer:", 1)[0]])
    prefix = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    return prefix + "Answer:"


def label_token_ids(tokenizer, prompt: str, labels: Sequence[str]) -> list[int]:
    """Token id of each label as the tokenizer encodes it right after `prompt`.

    The label is read as " X" (space + label). A label that is not exactly one
    token in that context cannot be read from next-token logits: clear error.
    """
    base = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids = []
    for lab in labels:
        full = tokenizer(prompt + " " + lab, add_special_tokens=True)["input_ids"]
        extra = full[len(base):]
        if full[: len(base)] != base or len(extra) != 1:
            pieces = [tokenizer.decode([t]) for t in (extra or full[-3:])]
            raise TaskError(
                f"option label {lab!r} is not a single token after the prompt for this tokenizer "
                f"(it encodes as {pieces}); use single-token labels such as A/B/C/D"
            )
        ids.append(extra[0])
    if len(set(ids)) != len(ids):
        raise TaskError(f"option labels {list(labels)} map to duplicate tokens {ids}")
    return ids


def continuation_ids(tokenizer, prompt: str, text: str) -> list[int]:
    """Tokens of " " + `text` as the tokenizer encodes them right after `prompt`
    (no space is added when the prompt ends in whitespace or the text starts with one).

    The prompt's own tokens must be unchanged by the continuation, else its log-likelihood
    is not a continuation's: clear error.
    """
    base = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    sep = "" if prompt[-1:].isspace() or text[:1].isspace() else " "
    full = tokenizer(prompt + sep + text, add_special_tokens=True)["input_ids"]
    if full[: len(base)] != base or len(full) == len(base):
        raise TaskError(f"option {text!r} does not tokenize as a continuation of its prompt (the prompt's last "
                        "token merges with it); end the prompt with a separator such as 'Answer:'")
    return full[len(base):]


# --------------------------------------------------------------------------- QATT

def proxy_orders(n_options: int, answer: int, n_proxies: int, rng: random.Random) -> list[list[int]]:
    """`n_proxies` distinct option orders; the correct answer lands on distinct
    positions when there are enough options (so a positional bias cannot make all
    proxies right by chance)."""
    positions = rng.sample(range(n_options), k=min(n_proxies, n_options))
    while len(positions) < n_proxies:
        positions.append(rng.randrange(n_options))
    orders, seen = [], set()
    others = [i for i in range(n_options) if i != answer]
    for pos in positions:
        for _ in range(100):
            rest = others[:]
            rng.shuffle(rest)
            order = rest[:pos] + [answer] + rest[pos:]
            if tuple(order) not in seen:
                break
        seen.add(tuple(order))
        orders.append(order)
    return orders


def qatt(
    task: Task,
    n_proxies: int = 3,
    seed: int = 0,
    demonstration: MCQuestion | None = None,
    instruction: str | None = None,
) -> Task:
    """QATT transform (NeuronLLM §3.3): every question becomes `n_proxies` proxies
    with options shuffled (answer preserved) and a one-shot demonstration.

    Proxies of one example share its uid and carry meta["proxy"] = 0..n-1.
    The demonstration is `demonstration`, else the task's first demonstration.
    """
    rng = random.Random(seed)
    demo = demonstration if demonstration is not None else (task.demonstrations[0] if task.demonstrations else None)
    proxies = []
    for j, q in enumerate(task.questions):
        uid = q.uid or f"{task.name}-{j}"
        base = replace(q, uid=uid, demonstration=demo if demo is not None else q.demonstration,
                       instruction=q.instruction if instruction is None else instruction)
        for t, order in enumerate(proxy_orders(len(q.options), q.answer, n_proxies, rng)):
            p = base.with_options(order)
            proxies.append(replace(p, meta={**q.meta, "proxy": t, "example": j}))
    return replace(task, questions=proxies, meta={**task.meta, "qatt": {"n_proxies": n_proxies, "seed": seed}})


def read_alike(questions: Sequence[MCQuestion], readout: str | None = None) -> tuple[list[int], list[list[int]]]:
    """Which questions read out alike, so each is computed once.

    Under a text read-out (cloze, cloze_norm, pmi) an "mc" question's prompt does not list
    its options, so the QATT proxies of one example are one prompt with the options in
    another order: their option scores are a permutation of each other. Returns, per
    question i, `rep[i]`, the first question it reads like (itself if none), and
    `perm[i]`: option j of question i is option `perm[i][j]` of question `rep[i]`.
    Letter read-outs and cloze-style questions are never merged.
    """
    rep, perm, first = [], [], {}
    for i, q in enumerate(questions):
        ro = readout or q.readout
        same = None
        if ro != "letter" and q.style == "mc" and len(set(q.options)) == len(q.options):
            k = (render(q, readout=ro), ro, tuple(sorted(q.options)), q.answer_text)
            same = first.setdefault(k, i)
        if same is None or same == i:
            rep.append(i)
            perm.append(list(range(len(q.options))))
        else:
            where = {o: j for j, o in enumerate(questions[same].options)}
            rep.append(same)
            perm.append([where[o] for o in q.options])
    return rep, perm


# --------------------------------------------------------------------------- distractors

def sample_distractors(
    answer: str,
    pool: Sequence[str],
    k: int,
    rng: random.Random,
    weights: Sequence[float] | None = None,
) -> list[str]:
    """k distinct distractors from `pool` (excluding the answer), optionally weighted
    by label frequency (NEG App. F: 'weighted sampling across all tags').

    NeuronLLM App. C.9 NER: 'randomly sample three different entities from other
    possible entity types'; pass weights=None for that uniform rule.
    """
    candidates = [(p, (weights[i] if weights is not None else 1.0)) for i, p in enumerate(pool) if p != answer]
    uniq = {}
    for p, w in candidates:
        uniq[p] = uniq.get(p, 0.0) + w if weights is not None else 1.0
    if len(uniq) < k:
        raise TaskError(f"need {k} distractors for {answer!r} but the label pool has only {len(uniq)} other labels")
    names, ws = list(uniq), list(uniq.values())
    chosen = []
    for _ in range(k):
        pick = rng.choices(range(len(names)), weights=ws, k=1)[0]
        chosen.append(names.pop(pick))
        ws.pop(pick)
    return chosen


def with_distractors(
    stem: str,
    answer: str,
    pool: Sequence[str],
    rng: random.Random,
    n_options: int = 4,
    weights: Sequence[float] | None = None,
    **kwargs,
) -> MCQuestion:
    """A question whose options are the answer plus sampled distractors, in random order."""
    options = [answer] + sample_distractors(answer, pool, n_options - 1, rng, weights)
    rng.shuffle(options)
    return MCQuestion(stem=stem, options=tuple(options), answer=options.index(answer), **kwargs)


def fixed_options(stem: str, answer: str, options: Sequence[str], **kwargs) -> MCQuestion:
    """A question with a fixed option list (NeuronLLM sentiment: positive/negative/neutral/not sure)."""
    if answer not in options:
        raise TaskError(f"answer {answer!r} is not one of the fixed options {list(options)}")
    return MCQuestion(stem=stem, options=tuple(options), answer=list(options).index(answer), **kwargs)


def balance(questions: Sequence[MCQuestion], n: int | None = None, seed: int = 0) -> list[MCQuestion]:
    """A class-balanced evaluation set: the same number of questions for every gold label
    (the correct option's text), so a constant answer scores 1 / labels (issue 19).

    n: questions in all (rounded down to a multiple of the labels); default as many as the
    rarest label allows. Questions are drawn per label with `random.Random(seed)` and then
    kept in their original order. A request for more than the rarest
    label has is an error that says how many it has.
    """
    by_label: dict[str, list[MCQuestion]] = {}
    for q in questions:
        by_label.setdefault(q.options[q.answer], []).append(q)
    if not by_label:
        raise TaskError("balance needs at least one question")
    rarest = min(len(v) for v in by_label.values())
    per_label = rarest if n is None else n // len(by_label)
    if per_label > rarest or per_label < 1:
        counts = {label: len(v) for label, v in by_label.items()}
        raise TaskError(f"cannot draw {per_label} questions per gold label (n={n}, {len(by_label)} labels): "
                        f"the labels have {counts}; ask for at most {rarest * len(by_label)}")
    rng = random.Random(seed)
    chosen = {label: sorted(rng.sample(range(len(v)), per_label)) for label, v in by_label.items()}
    order = {id(q): i for i, q in enumerate(questions)}
    picked = [by_label[label][i] for label, idx in chosen.items() for i in idx]
    return sorted(picked, key=lambda q: order[id(q)])
