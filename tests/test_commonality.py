"""CNL §5.3-5.4 helpers: halves agreement (Table 1), convergence (Fig. 6), chance overlap,
capped answer queries, free-form examples read as cloze choices, disjoint splits, and the
per-epoch hook of restricted fine-tuning."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_llama

from neuronloc import plots
from neuronloc.engine import make_query
from neuronloc.interventions import answer_batches, restricted_finetune
from neuronloc.localization import (answer_queries, chance_overlap, convergence, half_agreement, select_cnl, select_kn,
                                    split_halves)
from neuronloc.tasks import TaskError
from neuronloc.tasks.loaders import EMOTIONS, Example, as_choices, cnl_splits


def test_chance_overlap_matches_simulation():
    """(n_a + n_b) / 2n is the mean Eq. 9 overlap of random sets of those sizes."""
    g = torch.Generator().manual_seed(0)
    n, n_a, n_b, draws = 200, 10, 30, 4000
    sims = []
    for _ in range(draws):
        a = set(torch.randperm(n, generator=g)[:n_a].tolist())
        b = set(torch.randperm(n, generator=g)[:n_b].tolist())
        sims.append((len(a & b) / n_a + len(a & b) / n_b) / 2)
    assert abs(np.mean(sims) - chance_overlap(n_a, n_b, n)) < 0.01
    assert chance_overlap(n_a, n_b, n) == pytest.approx(0.1)
    assert math.isnan(chance_overlap(0, 5, n))


def test_split_halves_is_a_seeded_partition():
    a, b = split_halves(7, seed=3)
    assert len(a) == 3 and len(b) == 4
    assert sorted(torch.cat([a, b]).tolist()) == list(range(7))
    assert torch.equal(a, split_halves(7, seed=3)[0])
    with pytest.raises(ValueError, match="at least 2"):
        split_halves(1)


def _scores(n_examples: int, hot: list[list[int]], seed: int = 0) -> torch.Tensor:
    """[example, 2 layers, 50 neurons] small noise, plus 10 on the flat ids hot[e] of example e."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n_examples, 2, 50, generator=g) * 1e-3
    for e, ids in enumerate(hot):
        s.view(n_examples, -1)[e, ids] += 10.0
    return s


def test_half_agreement_by_hand():
    """Every example lights neurons 3 and 70; the examples of half a (by split_halves) also
    light 5: mask a = {3, 5, 70}, mask b = {3, 70} -> overlap (2/3 + 1) / 2, IoU 2/3."""
    n = 8
    a, _ = split_halves(n, seed=0)
    scores = _scores(n, [[3, 70] + ([5] if e in a.tolist() else []) for e in range(n)])
    agree = half_agreement(scores, select_cnl(2.0, "std"), seed=0)
    assert agree.overlap == pytest.approx((2 / 3 + 1) / 2)
    assert agree.iou == pytest.approx(2 / 3)
    assert agree.share_a == pytest.approx(3 / 100) and agree.share_b == pytest.approx(2 / 100)
    assert agree.chance == pytest.approx(chance_overlap(3, 2, 100))
    assert (agree.n_a, agree.n_b) == (4, 4)


def test_select_cnl_is_eq8_of_the_mean_and_kn_counts_examples():
    scores = _scores(4, [[7], [7], [7, 9], [9]])
    mean = scores.mean(0).double()
    for spread in ("var", "std"):
        spread_value = mean.var(unbiased=False) if spread == "var" else mean.std(unbiased=False)
        expected = (mean - mean.mean()).abs() > 2.0 * spread_value
        assert torch.equal(select_cnl(2.0, spread)(scores), expected)
    kn = select_kn(0.2, 0.5)(scores)  # 7 in 3 of 4 examples, 9 in 2 of 4: both >= half
    assert kn.flatten().nonzero().flatten().tolist() == [7, 9]
    assert select_kn(0.2, 0.75)(scores).flatten().nonzero().flatten().tolist() == [7]


def test_convergence_rows_and_identical_examples_agree_fully():
    scores = _scores(12, [[4, 60]] * 12)
    rows = convergence(scores, [4, 12], select_cnl(2.0, "std"), n_splits=3, seed=1)
    assert [(r["size"], r["split"]) for r in rows] == [(4, 0), (4, 1), (4, 2), (12, 0), (12, 1), (12, 2)]
    assert all(r["overlap"] == 1.0 and r["iou"] == 1.0 for r in rows)
    with pytest.raises(ValueError, match="between 2"):
        convergence(scores, [13], select_cnl(), 1)


def test_answer_queries_cap_the_answer_tokens(tiny):
    example = Example("One plus one is", "two or three", "x/1")
    full = make_query(tiny, example)
    capped = answer_queries(tiny, [example], max_answer_tokens=2)[0]
    assert torch.equal(capped.prompt, full.prompt) and capped.uid == "x/1"
    assert torch.equal(capped.continuations[0], full.continuations[0][:2])
    assert torch.equal(answer_queries(tiny, [example])[0].continuations[0], full.continuations[0])
    with pytest.raises(ValueError, match="max_answer_tokens"):
        answer_queries(tiny, [example], 0)


def test_as_choices_gold_plus_distractors_from_the_data_set():
    examples = [Example(f"Q{i}:", a, f"d/test/{i}") for i, a in enumerate(["1", "2", "3", "4", "5", "1"])]
    qs = as_choices(examples, 4, "cloze_norm", seed=0)
    assert len(qs) == 6
    for q, e in zip(qs, examples):
        assert q.options[q.answer] == e.answer and len(q.options) == 4 and len(set(q.options)) == 4
        assert set(q.options) <= {"1", "2", "3", "4", "5"}
        assert q.style == "cloze" and q.readout == "cloze_norm" and q.uid == e.uid and q.stem == e.prompt
    assert as_choices(examples, 4, "cloze_norm", seed=0) == qs
    two = as_choices([Example("a", "good", "i/1"), Example("b", "bad", "i/2")], 4)
    assert [len(q.options) for q in two] == [2, 2]
    labels = as_choices([Example("a", "joy", "e/1"), Example("b", "fear", "e/2")], 6, pool=EMOTIONS)
    assert all(sorted(q.options) == sorted(EMOTIONS) for q in labels) and labels[1].options[labels[1].answer] == "fear"
    with pytest.raises(TaskError, match="distinct answers"):
        as_choices([Example("a", "x", "1"), Example("b", "x", "2")])


@pytest.mark.parametrize("name", ["emotion", "code"])
def test_cnl_splits_are_disjoint(name):
    s = cnl_splits(name, 6, 4, 5, seed=0)
    assert [len(s[k]) for k in ("localize", "finetune", "eval")] == [6, 4, 5]
    uids = [e.uid for k in ("localize", "finetune") for e in s[k]]
    assert len(set(uids)) == 10
    if name == "code":  # one file: the eval examples are cut from it too
        assert not set(uids) & {e.uid for e in s["eval"]}
    else:
        assert all("/test/" in e.uid for e in s["eval"]) and all("/train/" in u for u in uids)


def test_restricted_finetune_after_epoch_sees_each_epoch():
    """after_epoch(e) runs after epoch e, on the weights of that epoch, in one Adam run."""
    lm = tiny_llama(seed=1)
    batches = answer_batches(lm, [("A b c", " d"), ("e f", " g")], batch_size=2)
    p = lm.model.model.layers[0].mlp.down_proj.weight
    seen = []
    restricted_finetune(lm, "ffn.mid", {0: [1, 2]}, batches, lr=1e-2, epochs=3, progress=False,
                        after_epoch=lambda e: seen.append((e, p[:, 1].detach().clone())))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert not torch.equal(seen[0][1], seen[1][1]) and torch.equal(seen[2][1], p[:, 1])


def test_cnl_figures():
    plots.style()
    fig = plots.neuron_map({"a": np.arange(2 * 70, dtype=float).reshape(2, 70), "b": np.ones((2, 70))},
                           {"a": np.eye(2, 70, dtype=bool)}, width=32)
    pooled = np.asarray(fig.axes[0].collections[0].get_array()).reshape(2, 3)  # max |score| of 32, 32, 6 neurons
    assert len(fig.axes) == 2 and np.allclose(pooled[0], np.array([31, 63, 69]) / 139)
    plt.close(fig)
    table = pd.DataFrame([[1.0, -2.0], [0.5, 0.0]], index=["x", "y"], columns=["x", "y"])
    fig = plots.cross_data({"enhance": table, "erase": -table})
    assert [ax.get_title() for ax in fig.axes] == ["enhance", "erase"]
    plt.close(fig)
    rows = pd.DataFrame({"size": [4, 4, 8, 8], "overlap": [0.2, 0.4, 0.6, 0.8], "chance": 0.1, "data": "a"})
    fig = plots.convergence(rows)
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)


def test_zeroed_weights_equal_erasing_at_every_position(tiny):
    """CNL erase by weights (zeroed) = silencing the neurons at every position; restored after."""
    from neuronloc.interventions import erase, evaluate_options, zeroed
    from neuronloc.tasks import MCQuestion
    questions = [MCQuestion("A b c d", ("e", "fg", "h"), 1, style="cloze", readout="cloze", uid="q1"),
                 MCQuestion("x y", ("z", "w"), 0, style="cloze", readout="cloze", uid="q2")]
    neurons = {0: [1, 5], 2: [0, 7, 9]}
    before = {n: p.clone() for n, p in tiny.model.state_dict().items()}
    by_hooks = evaluate_options(tiny, questions, erase(neurons), positions="all").probs
    with zeroed(tiny, "ffn.mid", neurons):
        by_weights = evaluate_options(tiny, questions).probs
    plain = evaluate_options(tiny, questions).probs
    assert torch.allclose(by_weights, by_hooks, atol=1e-6)
    assert not torch.allclose(by_weights, plain, atol=1e-4)
    assert all(torch.equal(p, before[n]) for n, p in tiny.model.state_dict().items())
