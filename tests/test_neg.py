"""NEG ground truth: the batched sweep against full-prompt re-runs and a hand-run edit,
NeurGrad against a measured slope, the additive prediction of a multi-neuron shift,
and the NEG metrics (Fig. 2, Table 1)."""
from __future__ import annotations

import pytest
import torch

import neuronloc as nl
from neuronloc.attribution import attribute
from neuronloc.engine import make_query
from neuronloc.hooks import Edit, intervene
from neuronloc.metrics import linearity_table, neg_slope, r_by_range, robustness
from neuronloc.neg import DELTAS, output_shifts, polarity_shift, sweep

from conftest import tiny_llama
from test_attribution import QUESTION as LETTER, Example
CLOZE = nl.MCQuestion(stem="The capital of Japan is", options=("to", "os", "ky"), answer=0,  # 2 tokens each
                      style="cloze", readout="cloze")
FREE = Example("Two plus two makes", " 4.")
NEURONS = torch.tensor([3, 48 + 20, 2 * 48 + 47, 48 + 5])  # layers 0, 1, 2, 1


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(seed=1)


def answer_prob(lm, question, edits=()):
    """P(answer text | prompt) by hand: one unbatched full forward, `edits` at the answer position."""
    query = make_query(lm, question)
    cont = query.answer_tokens
    ids = torch.cat([query.prompt, cont])
    with torch.no_grad(), intervene(lm.model, lm.site(), list(edits), positions=[query.position]):
        lp = lm.model(input_ids=ids[None]).logits[0].double().log_softmax(-1)
    return float(sum(lp[query.position + j, int(t)] for j, t in enumerate(cont)).exp())


@pytest.mark.parametrize("question", [LETTER, CLOZE, FREE], ids=["letter", "cloze-multi-token", "free-form"])
def test_batched_sweep_equals_full_prompt_reference(lm, question):
    deltas = torch.linspace(-10, 10, 11)
    fast = sweep(lm, question, NEURONS, deltas, rows=16)
    ref = sweep(lm, question, NEURONS, deltas, path="reference", rows=5)
    assert fast.shape == (len(NEURONS), 11)
    assert fast.abs().max() > 1e-7  # the edits move the output
    assert (fast - ref).abs().max() <= min(1e-5, 1e-3 * fast.abs().max())


@pytest.mark.parametrize("question", [LETTER, CLOZE])
def test_sweep_entry_equals_a_hand_run_edit(lm, question):
    deltas = torch.tensor([-3.0, 0.0, 1.4])
    shifts = sweep(lm, question, NEURONS[:2], deltas)
    base = answer_prob(lm, question)
    for n, flat in enumerate(NEURONS[:2].tolist()):
        layer, i = divmod(flat, 48)
        for d, delta in enumerate(deltas.tolist()):
            hand = answer_prob(lm, question, [Edit(layer, [i], "add_sign", delta)]) - base
            assert shifts[n, d].item() == pytest.approx(hand, abs=1e-6)
    assert shifts[:, 1].abs().max() < 1e-9  # Δ = 0 changes nothing (up to batch-size rounding)


def test_neurgrad_is_the_slope_of_a_small_delta_sweep(lm):
    scores = attribute("neurgrad", lm, LETTER).scores.reshape(-1)
    deltas = torch.linspace(-0.01, 0.01, 9, dtype=torch.float64)
    ids = torch.tensor([0, 7, 48 + 20, 2 * 48 + 47, 2 * 48 + 10])
    slopes = neg_slope(deltas, sweep(lm, LETTER, ids, deltas))
    assert torch.allclose(slopes, scores[ids].double(), rtol=2e-2, atol=1e-7)


def test_polarity_shift_of_two_neurons_by_hand(lm):
    ids = torch.tensor([48 + 20, 2 * 48 + 47])
    negs = torch.tensor([0.004, -0.002])
    steps = torch.tensor([0.0, 0.25, 0.5])
    res = polarity_shift(lm, LETTER, ids, negs, steps)
    # predicted: Σ NEG_i Δ_i with Δ_i = step·sign(NEG_i) = step·(|0.004| + |-0.002|)
    assert torch.allclose(res.predicted, steps.double() * 0.006)
    base = answer_prob(lm, LETTER)
    for s, step in enumerate(steps.tolist()):
        hand = answer_prob(lm, LETTER, [Edit(1, [20], "add_sign", step), Edit(2, [47], "add_sign", -step)]) - base
        assert res.actual[s].item() == pytest.approx(hand, abs=1e-6)


def test_output_shifts_per_condition_neuron_sets_batch_like_single_runs(lm):
    neurons = torch.tensor([[3, 48 + 5], [48 + 5, 2 * 48 + 1], [3, 3]])
    deltas = torch.tensor([[1.0, -2.0], [0.5, 0.5], [1.0, 1.0]])  # the last shifts one neuron twice: Δ = 2
    together = output_shifts(lm, CLOZE, neurons, deltas, rows=2)
    alone = torch.cat([output_shifts(lm, CLOZE, n, d[None]) for n, d in zip(neurons, deltas)])
    assert torch.allclose(together, alone, atol=1e-6)
    assert together[2].item() == pytest.approx(output_shifts(lm, CLOZE, [3], [[2.0]]).item(), abs=1e-6)


def test_shape_errors_are_clear(lm):
    with pytest.raises(ValueError, match="pair up"):
        output_shifts(lm, LETTER, torch.tensor([[1, 2]]), torch.zeros(3, 2))
    with pytest.raises(IndexError):
        sweep(lm, LETTER, [3 * 48], [1.0])
    with pytest.raises(ValueError, match="path"):
        sweep(lm, LETTER, [0], [1.0], path="slow")


def test_default_grid_is_the_papers():
    assert len(DELTAS) == 101 and DELTAS[0] == -10 and DELTAS[-1] == 10
    assert torch.allclose(DELTAS[1:] - DELTAS[:-1], torch.full((100,), 0.2, dtype=torch.float64))


def test_r_by_range_and_linearity_table():
    deltas = DELTAS
    linear_pos = 0.01 * deltas
    linear_neg = -0.02 * deltas
    bent = torch.tanh(2 * deltas)  # linear near 0, saturates: r 0.946 on ±2
    flat = torch.zeros_like(deltas)
    shifts = torch.stack([linear_pos, linear_neg, bent, flat])
    r = r_by_range(deltas, shifts, [0.5, 10])
    assert r[0] > r[1]  # the bent neuron is less linear on the wider range
    # nanmean leaves the constant neuron out: (1 + 1 + r_bent) / 3
    bent_r = float(torch.corrcoef(torch.stack([deltas, bent]))[0, 1])
    assert r[1].item() == pytest.approx((2 + bent_r) / 3, abs=1e-9)
    table = linearity_table(deltas, shifts, limit=2.0)
    assert table == {"linear": 0.5, "positive": 0.5, "negative": 0.25, "n": 4}


def test_robustness():
    assert robustness(0.75, 1.0, 0.5) == pytest.approx(0.5)
    assert robustness(0.4, 1.0, 0.5) == 0.0
    assert robustness(0.9, 0.5, 0.5) != robustness(0.9, 0.5, 0.5)  # nan: Y's own probe at chance


DECODERS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2", "gptj", "gpt_neox"]


@pytest.mark.parametrize("family", DECODERS)
def test_sweep_restart_equals_reference_for_every_decoder_family(family):
    """Rows restarted at their layer (after the KV-cached prefix) match full prompts in each family."""
    from test_sites import build
    from conftest import CharTokenizer
    from neuronloc.engine import Query
    from neuronloc.models import from_module
    lm = from_module(build(family), CharTokenizer(), name=family)
    site = lm.site()
    ids = torch.randint(2, 64, (9,), generator=torch.Generator().manual_seed(0))
    query = Query(ids[:6], (ids[6:8],))  # two teacher-forced answer tokens
    neurons = torch.tensor([site.n_neurons - 1, 0, site.n_inner + 1])  # last layer first: rows get sorted
    deltas = torch.tensor([-2.0, 0.5, 3.0])
    fast = sweep(lm, query, neurons, deltas, rows=4)
    ref = sweep(lm, query, neurons, deltas, path="reference")
    assert fast.abs().max() > 0
    assert ((fast - ref).abs().max() / fast.abs().max()).item() <= 1e-4, family


def test_grid_is_symmetric_with_the_step():
    from neuronloc.neg import grid
    g = grid(10, 0.2)
    assert len(g) == 101 and g[0] == -10 and g[-1] == 10 and g[50] == 0
    assert torch.allclose(g, DELTAS) and torch.allclose(grid(2, 1.0), torch.tensor([-2., -1, 0, 1, 2], dtype=torch.float64))


def test_study_collects_the_same_numbers_as_the_single_calls(lm):
    """neg.study is bookkeeping: every entry equals the library call it stands for."""
    from dataclasses import asdict

    from neuronloc.configs import StudyConfig
    from neuronloc.neg import study
    q = CLOZE
    deltas = torch.linspace(-2, 2, 5)
    config = StudyConfig(top_n=3, top_k=(1, 2), top_k_steps=(0.5, 1.0), multi_sizes=(1, 3),
                         multi_steps=((0.5, (0.1, 0.5)),), ig_steps=4, rows=16)
    res = study(lm, q, NEURONS, deltas, config)
    again = study(lm, q, NEURONS, deltas, StudyConfig(), **asdict(config))  # fields given as overrides
    assert again.top_k["neurgrad"].shape == (2, 2) and list(again.multi) == [0.5] and torch.equal(again.top, res.top)
    ng = attribute("neurgrad", lm, q).scores
    assert torch.allclose(res.neurgrad, ng) and torch.allclose(res.grad * torch.sign(res.acts), ng, atol=1e-12)
    assert torch.allclose(res.ig, attribute("ig", lm, q, target="answer_prob", steps=4, rule="linspace").scores)
    lpi = attribute("lpi", lm, q, target="answer_logprob").scores.flatten()[NEURONS]
    assert torch.allclose(res.lpi, lpi, rtol=1e-4, atol=2e-6)  # differences of fp32 log-probs
    assert torch.allclose(res.sweep, sweep(lm, q, NEURONS, deltas, rows=16))
    top = ng.flatten().abs().topk(3).indices
    assert torch.equal(res.top, top) and torch.allclose(res.top_sweep, sweep(lm, q, top, deltas, rows=16))
    one = polarity_shift(lm, q, top[:1], ng.flatten()[top[:1]], (0.5, 1.0))
    assert res.top_k["neurgrad"].shape == (2, 2) and torch.allclose(res.top_k["neurgrad"][0], one.actual)
    multi = res.multi[0.5]
    assert multi["steps"].tolist() == [0.1, 0.5] and multi["sizes"].tolist() == [1, 3]
    assert multi["actual"].shape == (2, 2) and multi["actual"].abs().max() > 0
    assert set(res.seconds) == {"neurgrad", "grad", "ig", "lpi"}


def test_answered_is_the_top_vocabulary_token(lm):
    from neuronloc.neg import answered
    query = make_query(lm, FREE)
    with torch.no_grad():
        ranked = lm.model(input_ids=query.prompt[None]).logits[0, -1].argsort(descending=True).tolist()
    top, second = (Example(FREE.prompt, lm.tokenizer.decode([t])) for t in ranked[:2])
    assert [len(make_query(lm, e).answer_tokens) for e in (top, second)] == [1, 1]  # single tokens in the char tokenizer
    assert answered(lm, top) and not answered(lm, second)
    assert not answered(lm, FREE)  # " 4." is two tokens


def test_polarity_shifts_batched_equal_single_runs(lm):
    from neuronloc.neg import polarity_shifts
    negs = torch.tensor([2e-3, -1e-3, 5e-4, -4e-4], dtype=torch.float64)
    runs = [(NEURONS[:1], negs[:1], torch.tensor([0.5, 1.0])), (NEURONS, negs, torch.tensor([0.0, 0.2, 0.4])),
            (NEURONS[2:], negs[2:], torch.tensor([1.0]))]
    batched = polarity_shifts(lm, CLOZE, runs, rows=4)
    for (ids, g, steps), b in zip(runs, batched):
        one = polarity_shift(lm, CLOZE, ids, g, steps)
        assert torch.allclose(b.actual, one.actual, atol=1e-9, rtol=1e-5) and torch.allclose(b.predicted, one.predicted)
    assert batched[1].actual[0] == pytest.approx(0.0, abs=1e-9) and batched[1].actual.abs().max() > 0
