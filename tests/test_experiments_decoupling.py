"""Notebook 02's experiment glue (neuronloc.experiments.decoupling) against independent
computations: greedy correctness against a model made to answer by hand and against
greedy decoding by hand (plain forwards, one token at a time)."""
from __future__ import annotations

import numpy as np
import pytest
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


# ---------------------------------------------------------------- P_s and the claims

from neuronloc import metrics  # noqa: E402
from neuronloc.experiments.decoupling import claims, nway_excess, pair_coincidences, top_share  # noqa: E402


def test_top_share_takes_the_largest_scores():
    scores = torch.arange(2000, dtype=torch.float).reshape(2, 1000)
    assert sorted(top_share(scores, 0.0015)) == [1997, 1998, 1999]  # round(0.0015 x 2000) = 3
    assert top_share(scores, 1e-9) == [1999]  # at least one


def test_pair_coincidences_and_nway_excess_by_hand():
    A = [[1, 2, 3, 4], [1, 2, 5, 6], [1, 2, 7, 8]]
    B = [[1, 2], [9], [1, 7, 8, 10]]
    assert pair_coincidences(A, B).tolist() == pytest.approx([2 / 3, 0.0, 3 / 4])  # |A n B| / mean size
    # n-way: compute {1, 2} of mean size 4 -> 0.5; code: empty intersection -> 0; chance with n = 10:
    chance_a = 10 * (4 / 10) ** 3 / 4
    chance_b = 10 * (2 / 10) * (1 / 10) * (4 / 10) / (7 / 3)
    assert nway_excess(A, B, 10) == pytest.approx(min(100 * (0.5 - chance_a), 100 * (0 - chance_b)))
    # a resample repeating row 0: the intersection is row 0's set, the mean size 4
    assert nway_excess(A, B, 10, rows=[0.0, 0.0]) == pytest.approx(min(100 * (1 - 10 * 0.4 ** 2 / 4), 100 * (1 - 10 * 0.2 ** 2 / 2)))


def test_claims_by_hand():
    A = [[1, 2, 3, i + 10] for i in range(10)]  # share {1, 2, 3}: n-way 3 / 4 -> far above chance
    B = [[1, 2, 3, i + 30] for i in range(10)]  # each pair shares 3 of 4: coincidence 75 %
    rows = {c.id: c for c in claims(A, B, 1000, n_resamples=300, seed=0)}
    assert rows["CN-10"].estimate == pytest.approx(75.0) and rows["CN-10"].ci == [75.0, 75.0]
    assert rows["CN-10"].verdict == "contradicted" and rows["CN-10"].n_of == "pairs"  # 75 > 50 - 17.2
    v, lo, hi = metrics.bootstrap_ci(lambda idx: nway_excess(A, B, 1000, idx), np.arange(10), n_resamples=300, seed=0)
    assert (rows["CN-11"].estimate, *rows["CN-11"].ci) == pytest.approx((v, lo, hi))
    assert rows["CN-11"].verdict == "replicated"
    # disjoint pairs of random-looking sets: coincidence 0 -> CN-10 replicated; no shared neuron -> CN-11 contradicted
    A2 = [[i] for i in range(10)]
    B2 = [[i + 100] for i in range(10)]
    rows = {c.id: c for c in claims(A2, B2, 1000, n_resamples=300, seed=0)}
    assert rows["CN-10"].verdict == "replicated"
    assert rows["CN-11"].ci[1] < 3.65 and rows["CN-11"].verdict == "contradicted"
