"""Questions, rendering, label tokens, QATT proxies, distractor sampling, and the
read-out on the real embedded model."""
from __future__ import annotations

import random
from dataclasses import replace
from collections import Counter

import pytest
import torch

from neuronloc.tasks import (MCQuestion, Task, TaskError, demonstrations, few_shot, fixed_options, label_token_ids, qatt, render,
                             sample_distractors, with_distractors)

from conftest import CharTokenizer

DEMO = MCQuestion(stem="2+2?", options=("4", "5", "6", "7"), answer=0)


def _task(n=4):
    qs = [MCQuestion(stem=f"Q{i}?", options=(f"right{i}", "w1", "w2", "w3"), answer=i % 4, uid=f"u{i}",
                     instruction="Answer with a letter.") for i in range(n)]
    return Task("toy", qs, demonstrations=[DEMO])


def test_qatt_proxies_preserve_the_answer_and_shuffle_options():
    """3 proxies per example, same answer text, distinct option orders, answer on distinct letters."""
    task = _task()
    proxies = qatt(task, n_proxies=3, seed=0)
    assert len(proxies) == 3 * len(task)
    for j, q in enumerate(task):
        group = [p for p in proxies if p.uid == q.uid]
        assert [p.meta["proxy"] for p in group] == [0, 1, 2]
        assert all(p.answer_text == q.answer_text and sorted(p.options) == sorted(q.options) for p in group)
        assert len({p.options for p in group}) == 3
        assert len({p.answer for p in group}) == 3
        assert all(p.demonstration == DEMO for p in group)


def test_qatt_is_seeded():
    a, b, c = (qatt(_task(), seed=s).questions for s in (1, 1, 2))
    assert a == b and a != c


def test_render_plain_has_instruction_demo_question_and_ends_with_answer():
    q = qatt(_task(1), seed=0)[0]
    text = render(q)
    assert text.startswith("Answer with a letter.")
    assert "Question: 2+2?" in text and "Answer: A" in text
    assert text.endswith("Answer:") and "D. " in text


def test_render_chat_needs_a_template():
    with pytest.raises(TaskError, match="chat template"):
        render(DEMO, CharTokenizer(), chat=True)


def test_label_tokens_are_single_tokens_after_the_prompt():
    tok = CharTokenizer()
    prompt = render(DEMO)
    ids = label_token_ids(tok, prompt, DEMO.labels)
    assert ids == [tok(prompt + " " + l)["input_ids"][-1] for l in "ABCD"]


def test_cloze_labels_follow_their_options():
    q = MCQuestion(style="cloze", stem="The capital of France is", options=("Paris", "Rome"), answer=0)
    assert q.labels == ("Paris", "Rome") and render(q) == "The capital of France is"
    p = q.with_options([1, 0])
    assert p.labels == ("Rome", "Paris") and p.answer == 1 and p.answer_label == "Paris"


def test_bad_questions_are_clear_errors():
    with pytest.raises(TaskError, match="answer index 4 out of range"):
        MCQuestion(stem="?", options=("a", "b"), answer=4)
    with pytest.raises(TaskError, match="not a permutation"):
        DEMO.with_options([0, 0, 1, 2])
    with pytest.raises(TaskError, match="not one of the fixed options"):
        fixed_options("s", "great", ["positive", "negative", "neutral", "not sure"])


def test_distractors_exclude_the_answer_and_follow_weights():
    rng = random.Random(0)
    pool = ["NP", "VP", "PP", "ADVP", "ADJP"]
    weights = [100, 50, 30, 1, 1]
    picks = Counter()
    for _ in range(300):
        d = sample_distractors("NP", pool, 3, rng, weights)
        assert "NP" not in d and len(set(d)) == 3
        picks.update(d)
    assert picks["VP"] > picks["ADVP"] and picks["PP"] > picks["ADJP"]
    q = with_distractors("Chunk type of 'said'?", "VP", pool, rng)
    assert q.answer_text == "VP" and len(q.options) == 4
    with pytest.raises(TaskError, match="only 1 other"):
        sample_distractors("a", ["a", "b"], 3, rng)


def test_sentiment_fixed_options_keep_not_sure():
    q = fixed_options("Great film.", "positive", ["positive", "negative", "neutral", "not sure"])
    assert q.options[q.answer] == "positive" and "not sure" in q.options


@pytest.mark.model
def test_embedded_model_reads_out_an_easy_answer(smol):
    """The real SmolLM2-135M puts its highest option probability on Paris (label read-out)."""
    from neuronloc.interventions import evaluate_options
    q = MCQuestion(style="cloze", stem="The capital of France is", options=("London", "Paris", "Berlin", "Rome"), answer=1)
    prompt = render(q)
    ids = label_token_ids(smol.tokenizer, prompt, q.labels)
    with torch.no_grad():
        probs = torch.softmax(smol.model(**smol.encode(prompt)).logits[0, -1, ids], -1)
    assert int(probs.argmax()) == 1 and probs[1] > 0.9
    japan = MCQuestion(style="cloze", stem="The capital of Japan is", options=("Tokyo", "Paris", "Madrid", "Lima"), answer=0)
    result = evaluate_options(smol, [q, japan])
    assert result.correct.all()
    assert torch.allclose(result.probs[0], probs, atol=1e-5)


def test_few_shot_shows_one_demonstration_per_option_before_the_question():
    """NEG §5.4: #demos = #options, each option the answer of one; a chain renders in order."""
    pool = [MCQuestion(stem=f"q{i}?", options=("yes", "no", "maybe"), answer=i % 3, instruction="Say.", uid=f"d{i}")
            for i in range(9)]
    q = MCQuestion(stem="Is it?", options=("yes", "no", "maybe"), answer=1, instruction="Say.", uid="q")
    shot = few_shot(q, pool, seed=0)
    demos = demonstrations(shot)
    assert sorted(d.answer for d in demos) == [0, 1, 2] and {d.uid for d in demos} <= {p.uid for p in pool}
    text = render(shot)
    assert text.count("Say.") == 1 and text.startswith("Say.")  # the instruction once, first
    positions = [text.index(f"Question: {d.stem}") for d in demos]
    assert positions == sorted(positions) and positions[-1] < text.index("Question: Is it?")
    for d in demos:  # each demonstration is answered with its own label
        assert f"Question: {d.stem}\nOptions:\nA. yes\nB. no\nC. maybe\nAnswer: {d.answer_label}" in text
    assert few_shot(q, pool, seed=0) == shot  # seeded
    with pytest.raises(TaskError, match="no demonstration .* option 2"):
        few_shot(q, [p for p in pool if p.answer != 2])


def test_few_shot_never_shows_the_question_itself():
    q = MCQuestion(stem="Is it?", options=("yes", "no"), answer=0, uid="q")
    pool = [replace(q, uid="copy"), MCQuestion(stem="Other?", options=("yes", "no"), answer=0, uid="o"),
            MCQuestion(stem="More?", options=("yes", "no"), answer=1, uid="m")]
    assert {d.uid for d in demonstrations(few_shot(q, pool))} == {"o", "m"}
