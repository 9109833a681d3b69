"""Notebook 02's experiment glue (neuronloc.experiments.decoupling) against independent
computations: greedy correctness against a model made to answer by hand and against
greedy decoding by hand (plain forwards, one token at a time)."""
from __future__ import annotations

import torch

from neuronloc.experiments.decoupling import greedy_correct

from conftest import tiny_llama


def _greedy(lm, ids: list[int], k: int) -> list[int]:
    """k tokens of greedy decoding after `ids`, one full forward per token."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(k):
            ids.append(int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-k:]


def test_greedy_correct_is_greedy_decoding_of_the_answer():
    lm = tiny_llama(seed=3)
    tok, prompt = lm.tokenizer, "Toko plays"
    ids = tok(prompt)["input_ids"]
    q = tok(prompt + " q")["input_ids"][-1]  # " q" is one token (conftest.CharTokenizer)
    with torch.no_grad():  # make " q" the top-1 token after the prompt: its head row is the final hidden state, scaled up
        h = lm.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        lm.model.lm_head.weight[q] = 1e3 * h / h.norm()
    assert _greedy(lm, ids, 1) == [q]
    assert greedy_correct(lm, prompt, "q")
    assert not greedy_correct(lm, prompt, "r")
    # two answer tokens (" q", then a character): correct exactly when greedy decoding gives the second one too
    second = _greedy(lm, ids, 2)[1]
    for c in "abcdefghijklmnopqrstuvwxyz":
        answer_ids = tok(prompt + " q" + c)["input_ids"][len(ids):]
        assert greedy_correct(lm, prompt, "q" + c) == (answer_ids == [q, second])
    # the answer whose second token is the greedy one (CharTokenizer: a character c is token 2 + ord(c) % 63,
    # " " + c is token 65 + ord(c) % 63)
    tail = chr(second - 2 + 63) if second < 65 else " " + chr(second - 65 + 63)
    assert tok(prompt + " q" + tail)["input_ids"][len(ids):] == [q, second]
    assert greedy_correct(lm, prompt, "q" + tail)
