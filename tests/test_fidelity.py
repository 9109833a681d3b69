"""CNL §3-4 helpers against independent computations: paraphrase overlap and the chance
levels of Eq. 6/9 (hand-worked sets, Monte Carlo), circuit parameter counts (from the
config by hand), KN neuron sets (hand-made scores), answer probabilities under neuron edits
and answer log-probabilities (plain torch hooks / a plain forward), the ROME layer sweep."""
from __future__ import annotations

import math
import random

import pytest
import torch

from neuronloc import metrics
from neuronloc.hooks import excite, silence
from neuronloc.localization import Fact, Node, make_fact, node_parameters, parameter_share
from neuronloc.localization.validation import answer_logprob, answer_prob, kn_neurons, layer_sweep

from conftest import scaled_prob, tiny_llama

TEXTS = [f"the quick brown fox {i} jumps over the lazy dog" for i in range(40)]


@pytest.fixture(scope="module")
def lm():
    lm = tiny_llama(seed=2)
    lm.model.double()
    return lm


def test_pairwise_overlap_by_hand():
    a, b, c = [1, 2, 3, 4], [3, 4, 5, 6], [1, 2, 3, 4]
    # pairs: (a,b) 2/4 both ways -> 0.5; (a,c) identical -> 1; (b,c) -> 0.5
    assert metrics.pairwise_overlap([a, b, c]) == pytest.approx(2 / 3)
    assert metrics.pairwise_overlap([[1, 2], [2]]) == pytest.approx((1 / 2 + 1) / 2)
    assert math.isnan(metrics.pairwise_overlap([[1, 2]]))
    assert metrics.pairwise_overlap([[1], [], [1]]) == 1.0  # pairs with an empty set are skipped


def test_chance_levels_match_monte_carlo():
    rng = random.Random(0)
    n, trials = 60, 4000
    sizes_a, sizes_b = [5, 12, 20], [9, 3, 20]
    sim = 0.0
    for _ in range(trials):
        A = [rng.sample(range(n), s) for s in sizes_a]
        B = [rng.sample(range(n), s) for s in sizes_b]
        sim += metrics.coincidence(A, B)
    assert metrics.chance_coincidence(sizes_a, sizes_b, n) == pytest.approx(sim / trials, rel=0.05)
    over = sum(metrics.overlap(rng.sample(range(n), 7), rng.sample(range(n), 15)) for _ in range(trials)) / trials
    assert metrics.random_overlap(7, 15, n) == pytest.approx(over, rel=0.05)
    sizes = [30, 40, 35]
    nway = sum(metrics.coincidence([rng.sample(range(n), s) for s in sizes]) for _ in range(trials)) / trials
    assert metrics.chance_coincidence(sizes, n=n) == pytest.approx(nway, rel=0.05)
    assert metrics.chance_coincidence([0, 4], n=n) == 0.0


def test_node_parameters_from_the_config_by_hand(lm):
    d, heads, kv, ffn, layers = 32, 4, 2, 48, 3  # conftest.tiny_llama
    head_dim = d // heads
    attn = d * d + 2 * (kv * head_dim) * d + d * d  # q, k, v, o (LLaMA: no biases)
    mlp = 3 * d * ffn  # gate, up, down
    per_head, per_mlp, total = node_parameters(lm)
    assert per_head == [attn / heads] * layers and per_mlp == [mlp] * layers
    assert total == sum(p.numel() for p in lm.model.parameters())
    everything = [Node(l, h) for l in range(layers) for h in (*range(heads), None)]
    assert parameter_share(lm, everything) == pytest.approx(layers * (attn + mlp) / total)
    assert parameter_share(lm, [Node(1), Node(1), Node(0, 2)]) == pytest.approx((mlp + attn / heads) / total)


def test_kn_neurons_threshold_of_the_max():
    scores = torch.zeros(2, 5)
    scores[0, 1], scores[1, 3], scores[1, 0], scores[0, 4] = 1.0, 0.5, 0.15, -3.0
    assert kn_neurons(scores, 0.2).tolist() == [1, 8]  # 0.15 is not > 0.2 x 1.0; negatives never
    assert kn_neurons(scores, 0.1).tolist() == [1, 8, 5]
    assert kn_neurons(-scores.abs(), 0.2).numel() == 0  # max <= 0: nothing located


def test_answer_prob_under_doubling_and_zeroing_matches_plain_hooks(lm):
    fact = Fact(torch.tensor([1, 5, 9, 13, 7, 22]), range(1, 3), torch.tensor([40, 41]))
    neurons = {0: [3, 17], 2: [0, 5, 47]}
    assert answer_prob(lm, fact) == pytest.approx(scaled_prob(lm, fact, {}, 1.0), rel=1e-12)
    assert answer_prob(lm, fact, excite(neurons)) == pytest.approx(scaled_prob(lm, fact, neurons, 2.0), rel=1e-12)
    assert answer_prob(lm, fact, silence(neurons)) == pytest.approx(scaled_prob(lm, fact, neurons, 0.0), rel=1e-12)
    assert answer_prob(lm, fact, excite(neurons)) != pytest.approx(answer_prob(lm, fact), rel=1e-6)


def test_answer_logprob_is_the_teacher_forced_sum(lm):
    prompt, answer = torch.tensor([1, 8, 9, 10]), torch.tensor([20, 21, 22])
    with torch.no_grad():
        lp = lm.model(input_ids=torch.cat([prompt, answer])[None]).logits[0].double().log_softmax(-1)
    hand = sum(float(lp[len(prompt) - 1 + j, answer[j]]) for j in range(len(answer)))
    assert answer_logprob(lm, prompt, answer) == pytest.approx(hand, rel=1e-12)


def test_layer_sweep_rows_and_restores_the_model(lm):
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    rows = layer_sweep(lm, "Music by Toko", "Toko", "piano", "drums", layers=[0, 2],
                       paraphrases=["The music of Toko"], corpus=TEXTS[:16], steps=12, lr=0.1, clamp=1e4, weight_decay=0.0)
    assert [(r["layer"], r["prompt"]) for r in rows] == [
        (l, p) for l in (None, 0, 2) for p in ("edited", "paraphrase 0")]
    assert all(torch.equal(v, state[k]) for k, v in lm.model.state_dict().items())
    f_new = make_fact(lm, "Music by Toko", "Toko", "piano")
    assert rows[0]["logp_new"] == pytest.approx(answer_logprob(lm, f_new.prompt, f_new.answer), rel=1e-12)
    for r in rows:
        assert r["success"] == (r["logp_new"] > r["logp_true"])
    edited = {r["layer"]: r["logp_new"] for r in rows if r["prompt"] == "edited"}
    assert edited[0] > edited[None] + 0.3 and edited[2] > edited[None] + 0.3  # the edit raises the new object


def test_paraphrase_groups_keep_known_facts_with_enough_paraphrases(lm):
    from neuronloc.localization.facts import paraphrase_groups
    from neuronloc.tasks.loaders import Example

    def ex(fact, prompt, subject, answer="xy"):
        return Example(prompt, answer, f"{fact}/{prompt}", {"fact": fact, "subject": subject})
    examples = [ex("a", "Toko plays", "Toko"), ex("a", "The music of Toko", "Toko"), ex("a", "Toko's tune", "Toko"),
                ex("b", "Mira sings", "Mira"), ex("b", "no subject here", "Mira"),  # b: one usable prompt too few
                ex("c", "Lupo runs", "Lupo"), ex("c", "Lupo walks", "Lupo")]
    groups = paraphrase_groups(lm, examples, 2, known=False)
    assert [[e.prompt for e in g] for g in groups] == [["Toko plays", "The music of Toko"], ["Lupo runs", "Lupo walks"]]
    assert len(paraphrase_groups(lm, examples, 2, n_facts=1, known=False)) == 1
    # known: the model's top-1 next token after the first prompt is the answer's first token (by hand)
    for g in paraphrase_groups(lm, examples, 2, known=False):
        f = make_fact(lm, g[0])
        with torch.no_grad():
            top = int(lm.model(input_ids=f.prompt[None]).logits[0, -1].argmax())
        kept = any(k[0].prompt == g[0].prompt for k in paraphrase_groups(lm, examples, 2, known=True))
        assert kept == (top == f.target)
    # a model made to answer "q" after "Toko plays": its head row for that token is the final hidden state, scaled up
    known_lm = tiny_llama(seed=3)
    f = make_fact(known_lm, "Toko plays", "Toko", "q")
    with torch.no_grad():
        h = known_lm.model.model(input_ids=f.prompt[None]).last_hidden_state[0, -1]
        known_lm.model.lm_head.weight[f.target] = 1e3 * h / h.norm()
    pair = [Example(p, "q", f"d/{p}", {"fact": "d", "subject": "Toko"}) for p in ("Toko plays", "Toko sings")]
    assert len(paraphrase_groups(known_lm, pair, 2, known=True)) == 1
    other = [Example("Toko plays", "r", "e/0", {"fact": "e", "subject": "Toko"})] * 2  # "r" is not its top-1
    assert make_fact(known_lm, other[0]).target != f.target
    assert paraphrase_groups(known_lm, other, 2, known=True) == []


def test_answer_top1_is_greedy_decoding(lm):
    from neuronloc.localization.validation import answer_top1

    prompt = torch.tensor([1, 8, 9, 10])
    ids = prompt.clone()
    with torch.no_grad():
        for _ in range(3):  # greedy decoding by hand
            ids = torch.cat([ids, lm.model(input_ids=ids[None]).logits[0, -1].argmax()[None]])
    greedy = ids[len(prompt):]
    assert answer_top1(lm, prompt, greedy)
    assert answer_top1(lm, prompt, greedy[:2])
    wrong = greedy.clone()
    wrong[2] = (wrong[2] + 1) % 128
    assert not answer_top1(lm, prompt, wrong)


def test_localize_is_the_three_localizers_and_resumes_from_the_store(lm, tmp_path):
    from neuronloc.localization import causal_trace, knowledge_circuit
    from neuronloc.localization.validation import kn_scores, localize
    from neuronloc.store import Store

    fact = Fact(torch.tensor([1, 5, 9, 13, 7, 22]), range(1, 3), torch.tensor([40]))
    store = Store(tmp_path)
    loc = localize(lm, fact, store, steps=4, top_layers=2)
    assert torch.equal(loc.kn, kn_neurons(kn_scores(lm, fact, 4)))
    trace = causal_trace(lm, fact, kinds=("mlp.out",))
    assert loc.layers == trace.top_layers(2, "mlp.out", "subject_last")
    assert loc.circuit.nodes == knowledge_circuit(lm, fact, "zero", 0.01).nodes
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3  # KN scores, trace, circuit
    again = localize(lm, fact, store, steps=4, top_layers=2)
    assert sorted(tmp_path.iterdir()) == files and torch.equal(again.kn, loc.kn) and again.layers == loc.layers


def test_trace_of_some_tokens_equals_those_columns_of_the_full_trace(lm):
    from neuronloc.localization import causal_trace

    fact = Fact(torch.tensor([1, 5, 9, 13, 7, 22]), range(1, 3), torch.tensor([40]))
    full = causal_trace(lm, fact, kinds=("mlp.out",))
    part = causal_trace(lm, fact, kinds=("mlp.out",), tokens=["subject_last", 4])
    for t in (2, 4):
        assert torch.allclose(part.restored["mlp.out"][:, t], full.restored["mlp.out"][:, t], rtol=1e-9, atol=1e-12)
    assert torch.isnan(part.restored["mlp.out"][:, [0, 1, 3, 5]]).all()
    assert part.top_layers(2, "mlp.out", "subject_last") == full.top_layers(2, "mlp.out", "subject_last")


def test_circuit_top_k_equals_the_top_k_circuit(lm):
    from neuronloc.localization import knowledge_circuit

    fact = Fact(torch.tensor([1, 5, 9, 13, 7, 22]), range(1, 3), torch.tensor([40]))
    by_threshold = knowledge_circuit(lm, fact, "zero", 0.01)
    for k in (1, 5, 15):
        assert by_threshold.top(k) == knowledge_circuit(lm, fact, "zero", top_k=k).nodes
    assert by_threshold.top(len(by_threshold.nodes)) == by_threshold.nodes  # the threshold keeps a top-k prefix
