"""Interventions: activation edits, budget split, restricted fine-tuning, option read-out."""
from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from conftest import tiny_llama

from neuronloc.hooks import Edit, capture, intervene, silence
from neuronloc.interventions import (
    RATIOS, answer_batches, degrader, enhancer, erase, evaluate_conditions, evaluate_options,
    neuron_parameters, position_ids, random_neurons, restricted_finetune, shift, split_budget,
    sweep_ratios,
)
from neuronloc.sites import FAMILIES, resolve_site
from neuronloc.tasks import MCQuestion, Task, qatt


@pytest.fixture(scope="module")
def questions():
    """12 QATT proxies of 4 examples, prompts of different lengths (exercises left padding)."""
    base = [MCQuestion(f"what is {i}{'x' * 3 * i}?", ("red", "green", "blue", "gray"), i % 4) for i in range(4)]
    return qatt(Task("toy", base)).questions


def _prompt(lm, text="Question: a b c\nAnswer:"):
    return lm.encode([text, text[3:]])


# ---------------------------------------------------------------- activation edits

GOOD = {0: [1, 5], 2: [7]}
BAD = {0: [3], 1: [0, 2]}


def _edited(lm, edits):
    """Neurons at every layer and position, before and after `edits`, from one forward."""
    site = lm.site()
    batch = _prompt(lm)
    with torch.no_grad(), capture(lm.model, site, positions="all") as before, \
            intervene(lm.model, site, edits), capture(lm.model, site, positions="all") as after:
        lm.model(**batch)
    return before.stack(), after.stack()  # [layer, batch, pos, n_inner]


@pytest.mark.parametrize("operator, good_op, bad_op", [
    (enhancer, lambda a: 2 * a, lambda a: 0 * a),
    (degrader, lambda a: 0 * a, lambda a: 2 * a),
])
def test_operator_changes_exactly_the_targeted_coordinates(tiny, operator, good_op, bad_op):
    before, after = _edited(tiny, operator(GOOD, BAD))
    expected = before.clone()
    for neurons, op in ((GOOD, good_op), (BAD, bad_op)):
        for layer, idx in neurons.items():
            expected[layer, :, -1, idx] = op(before[layer, :, -1, idx])
    assert torch.equal(after, expected)
    assert not torch.equal(after, before)


def test_shift_and_erase(tiny):
    before, after = _edited(tiny, shift(GOOD, 0.5))
    expected = before.clone()
    for layer, idx in GOOD.items():
        a = before[layer, :, -1, idx]
        expected[layer, :, -1, idx] = a + 0.5 * torch.sign(a)
    assert torch.equal(after, expected)
    before, after = _edited(tiny, erase(BAD))
    assert all((after[l, :, -1, idx] == 0).all() for l, idx in BAD.items())


def test_neuron_set_forms_agree(tiny):
    site = tiny.site()
    flat = [site.flat(l, i) for l, idx in GOOD.items() for i in idx]
    mask = torch.zeros(site.n_layers, site.n_inner, dtype=torch.bool)
    for l, idx in GOOD.items():
        mask[l, idx] = True
    assert enhancer(flat, [], site) == enhancer(torch.tensor(flat), [], site) == enhancer(mask, []) == enhancer(GOOD, {})
    assert enhancer(set(flat), [], site) == enhancer(GOOD, {})
    with pytest.raises(ValueError, match="site"):
        enhancer(flat, [])
    with pytest.raises(IndexError):
        erase([site.n_neurons], site)


# ---------------------------------------------------------------- budget split

@pytest.mark.parametrize("budget", [10, 7, 100])
def test_split_budget_all_ratios(budget):
    good, bad = torch.arange(1000), torch.arange(1000, 2000)
    assert RATIOS == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    for ratio in RATIOS:
        g, b = split_budget(good, bad, budget, ratio)
        n_good = int(ratio * budget + 0.5)  # round half up
        assert len(g) == n_good and len(g) + len(b) == budget
        assert torch.equal(g, good[:n_good]) and torch.equal(b, bad[:budget - n_good])
    assert [len(split_budget(good, bad, 5, r)[0]) for r in RATIOS] == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert split_budget([1, 2], [3], 4, 0.5) == ([1, 2], [3])  # short lists are not refilled
    with pytest.raises(ValueError):
        split_budget(good, bad, 10, 1.5)


# ---------------------------------------------------------------- option read-out

def _manual(lm, question, edits=None):
    """One question, unbatched: softmax over the option-label logits at the last position."""
    from neuronloc.tasks import label_token_ids, render

    prompt = render(question)
    ids = torch.tensor([lm.tokenizer(prompt)["input_ids"]])
    with torch.no_grad(), (intervene(lm.model, lm.site(), edits) if edits else nullcontext()):
        logits = lm.model(input_ids=ids).logits[0, -1]
    return logits[label_token_ids(lm.tokenizer, prompt, question.labels)].softmax(-1)


@pytest.mark.parametrize("edits", [None, enhancer(GOOD, BAD)])
def test_evaluate_options_matches_manual_forward(tiny, questions, edits):
    result = evaluate_options(tiny, questions, edits)
    manual = torch.stack([_manual(tiny, q, edits) for q in questions])
    assert result.probs.shape == (len(questions), 4)
    torch.testing.assert_close(result.probs, manual, atol=1e-5, rtol=1e-4)
    assert torch.equal(result.pred, manual.argmax(-1))
    assert torch.equal(result.correct, result.pred == torch.tensor([q.answer for q in questions]))
    # Com: >= 2 of the 3 proxies of an example right
    by_uid = {}
    for q, ok in zip(questions, result.correct.tolist()):
        by_uid.setdefault(q.uid, []).append(ok)
    assert result.com == pytest.approx(sum(sum(v) >= 2 for v in by_uid.values()) / len(by_uid))


def test_evaluate_conditions_equals_full_prompt_reruns(tiny, questions):
    """The KV-cached, one-row-per-condition read-out equals re-running every prompt,
    left padded and batched, under each condition (positions=[-1] takes the full path)."""
    site = tiny.site()
    conditions = [[], enhancer(GOOD, BAD), degrader(GOOD, BAD), shift({1: [3, 5]}, 0.5)]
    cached = evaluate_conditions(tiny, questions, conditions, site, rows=3)
    for cond, got in zip(conditions, cached):
        full = evaluate_options(tiny, questions, cond, site, positions=[-1])
        torch.testing.assert_close(got.probs, full.probs, atol=1e-5, rtol=1e-4)
        assert torch.equal(got.pred, full.pred)
    with pytest.raises(ValueError, match="without rows="):
        evaluate_conditions(tiny, questions, [[Edit(0, [1], "set", 0.0, rows=[0])]], site)


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_sweep_ratios(tiny, questions):
    site = tiny.site()
    good, bad = torch.arange(0, 40, 3), torch.arange(60, 100, 3)
    out = sweep_ratios(tiny, questions, good, bad, budget=6, mode="degrade", site=site, progress=False)
    assert [r["ratio"] for r in out["rows"]] == RATIOS
    assert out["best"]["acc"] == min(r["acc"] for r in out["rows"])
    last = evaluate_options(tiny, questions, degrader(good[:6], [], site))
    assert out["rows"][-1]["acc"] == last.acc and out["rows"][-1]["com"] == last.com
    assert out["base"]["acc"] == evaluate_options(tiny, questions).acc


# ---------------------------------------------------------------- restricted fine-tuning

LOCATED = {0: [2, 9], 2: [4]}


def _owned(model, site, neurons):
    """{param name: bool mask of the entries owned by `neurons`} (FFN params only)."""
    names = {id(p): n for n, p in model.named_parameters()}
    owned = {}
    for layer in range(site.n_layers):
        for p, dim, offset in neuron_parameters(model, site, layer):
            m = owned.setdefault(names[id(p)], torch.zeros_like(p, dtype=torch.bool))
            for i in neurons.get(layer, []):
                m.narrow(dim, offset + i, 1).fill_(True)
    return owned


@pytest.mark.parametrize("mode", ["located", "random", "without"])
def test_restricted_finetune_touches_only_selected_weights(questions, mode):
    lm = tiny_llama(seed=1)
    site = lm.site()
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    located = LOCATED if mode != "random" else random_neurons(site, 3, seed=0)
    owned = _owned(lm.model, site, located)
    losses = restricted_finetune(lm, site, LOCATED, answer_batches(lm, questions, batch_size=6),
                                 lr=1e-3, epochs=2, mode=mode, progress=False)
    assert len(losses) == 2 and all(map(lambda x: x == x, losses))
    for name, p in lm.model.named_parameters():
        assert not p.requires_grad and p.grad is None
        old, new = before[name], p.detach()
        if name not in owned:  # attention, embeddings, norms: never trained
            assert torch.equal(new, old), name
            continue
        changed = new != old
        if mode == "without":
            assert (new[owned[name]] == 0).all(), name             # located weights zeroed ...
            assert changed[~owned[name]].all(), name               # ... every other FFN weight trained
        else:
            assert torch.equal(new[~owned[name]], old[~owned[name]]), name  # bitwise unchanged
            assert changed[owned[name]].all(), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_restricted_finetune_on_cuda(questions):
    lm = tiny_llama(seed=1)
    lm.model.to("cuda")
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    restricted_finetune(lm, "ffn.mid", LOCATED, answer_batches(lm, questions), lr=1e-3, progress=False)
    owned = _owned(lm.model, lm.site(), LOCATED)
    for name, p in lm.model.named_parameters():
        keep = ~owned[name] if name in owned else torch.ones_like(p, dtype=torch.bool)
        assert torch.equal(p[keep], before[name][keep]) and (name not in owned or (p[owned[name]] != before[name][owned[name]]).all())


def test_random_neurons_are_seeded_and_uniform():
    site = tiny_llama().site()
    a, b = random_neurons(site, 20, seed=3), random_neurons(site, 20, seed=3)
    assert a == b and sum(map(len, a.values())) == 20 and a != random_neurons(site, 20, seed=4)


def _tiny_family(family):
    """A fresh tiny random model of `family` (test_sites' builders; fresh, as the test edits weights)."""
    from test_sites import SPECS

    torch.manual_seed(0)
    return SPECS[family][0]().eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_parameters_are_the_neuron(family):
    """Zeroing the parameters that `neuron_parameters` gives for neuron i has the effect
    of silencing neuron i: the map names exactly that FFN unit, in every family."""
    model = _tiny_family(family)
    site = resolve_site(model)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    neurons = {1: [3, 11]}
    with torch.no_grad(), intervene(model, site, silence(neurons), positions="all"):
        silenced = model(input_ids=ids).logits
    with torch.no_grad():
        for p, dim, offset in neuron_parameters(model, site, 1):
            p.index_fill_(dim, torch.tensor(neurons[1]) + offset, 0.0)
        zeroed = model(input_ids=ids).logits
        original = _tiny_family(family)(input_ids=ids).logits
    torch.testing.assert_close(zeroed, silenced)
    assert not torch.equal(silenced, original)


def test_neuron_parameters_need_an_ffn_site():
    """Restricted fine-tuning trains FFN units: another site is refused with the ones to use."""
    lm = tiny_llama()
    with pytest.raises(ValueError, match="use site ffn.mid or ffn.up, not 'attn.out'"):
        neuron_parameters(lm.model, lm.site("attn.out"), 0)


# ---------------------------------------------------------------- competence against the best trivial answer

def _sentiment(golds):
    from neuronloc.tasks import fixed_options
    opts = ("positive", "negative", "neutral", "not sure")
    return [fixed_options(f"review {i}", g, opts, uid=str(i)) for i, g in enumerate(golds)]


def test_competence_is_tested_against_the_best_constant_answer():
    from neuronloc.interventions import competence_of, trivial_accuracy
    golds = ["positive"] * 47 + ["negative"] * 40 + ["neutral"] * 13  # issue 19: 47 % positive
    questions = _sentiment(golds)
    assert trivial_accuracy(questions) == pytest.approx(0.47)
    always_positive = [g == "positive" for g in golds]
    c = competence_of("cloze", questions, always_positive)
    assert c.acc == pytest.approx(0.47) and c.baseline == pytest.approx(0.47) and c.chance == 0.25
    assert not c.above_chance()  # 0.47 beats 1/4, not the constant answer
    c43 = competence_of("cloze", questions, [True] * 43 + [False] * 57)
    assert not c43.above_chance()  # the 0.43 that counted as competent before
    c70 = competence_of("cloze", questions, [True] * 70 + [False] * 30)
    assert c70.above_chance() and c70.p_value == pytest.approx(
        __import__("scipy").stats.binomtest(70, 100, 0.47, alternative="greater").pvalue)


def test_trivial_accuracy_counts_a_constant_position_too():
    from neuronloc.interventions import trivial_accuracy
    from neuronloc.tasks import MCQuestion
    qs = [MCQuestion(f"q{i}", (f"a{i}", f"b{i}", f"c{i}"), answer=0 if i < 6 else 1) for i in range(10)]
    assert trivial_accuracy(qs) == 0.6  # always "A"; no option text repeats


def test_balance_gives_equal_gold_labels():
    from neuronloc.tasks import TaskError, balance
    questions = _sentiment(["positive"] * 47 + ["negative"] * 40 + ["neutral"] * 13)
    even = balance(questions, seed=1)
    labels = [q.options[q.answer] for q in even]
    assert len(even) == 39 and {l: labels.count(l) for l in set(labels)} == {"positive": 13, "negative": 13, "neutral": 13}
    assert [questions.index(q) for q in even] == sorted(questions.index(q) for q in even)  # original order kept
    assert balance(questions, n=30, seed=1) == balance(questions, n=30, seed=1) and len(balance(questions, n=31)) == 30
    from neuronloc.interventions import trivial_accuracy
    assert trivial_accuracy(even) == pytest.approx(1 / 3)
    with pytest.raises(TaskError, match="at most 39"):
        balance(questions, n=60)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "gpt_neox"])
def test_answer_loss_equals_the_models_own_loss(family):
    """`answer_loss` (head on the answer positions only) equals `model(..., labels=).loss` on
    left-padded rows with answers of different lengths, and so does its gradient."""
    from test_sites import build
    from conftest import CharTokenizer
    from neuronloc.interventions import answer_loss
    from neuronloc.models import from_module
    torch.manual_seed(0)
    lm = from_module(build(family), CharTokenizer(), name=family)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 64, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, :3] = mask[2, :6] = 0  # left padding
    labels = torch.full((3, 10), -100)
    labels[0, 6:], labels[1, 8:], labels[2, 9:] = ids[0, 6:], ids[1, 8:], ids[2, 9:]  # answers of 4, 2 and 1 tokens
    w = next(p for n, p in lm.model.named_parameters() if "mlp" in n and p.ndim == 2)
    w.requires_grad_(True)
    ours = answer_loss(lm, ids, mask, labels)
    g_ours, = torch.autograd.grad(ours, w)
    theirs = lm.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), labels=labels).loss
    g_theirs, = torch.autograd.grad(theirs, w)
    w.requires_grad_(False)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-4, atol=1e-7)


def _finetune_batches():
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(2):
        ids = torch.randint(2, 60, (2, 8), generator=g)
        mask = torch.ones_like(ids)
        mask[1, :2] = 0  # left padding
        labels = torch.full_like(ids, -100)
        labels[:, -2:] = ids[:, -2:]
        out.append((ids, mask, labels))
    return out


@pytest.mark.parametrize("family", ["llama", "phi3", "gpt2", "gpt_neox"])
def test_slice_deltas_take_the_steps_of_masked_whole_matrices(family):
    """`restricted_finetune` with `slice_deltas` (gradients of the located slices only: rows of
    gate/up, biases, columns of down; phi3's fused gate_up, GPT-2's Conv1D) takes the same Adam
    steps as the whole FFN matrices with their gradients masked to those slices: the same
    losses and weights after 2 epochs (float64), every other weight bitwise unchanged; for the
    random mode too. An exception from a callback still leaves the steps taken in the model."""
    import copy

    from test_sites import build
    from conftest import CharTokenizer
    from neuronloc.interventions import restricted_finetune
    from neuronloc.models import from_module

    lm = from_module(copy.deepcopy(build(family)).double(), CharTokenizer(64), name=family)
    site, batches = lm.site("ffn.mid"), _finetune_batches()
    neurons = {0: [1, 5], 1: [0, 3, 7]}
    start = copy.deepcopy(lm.model.state_dict())
    for mode in ("located", "random"):
        runs = {}
        for sparse in (True, False):
            lm.model.load_state_dict(start)
            losses = restricted_finetune(lm, site, neurons, batches, lr=0.05, epochs=2, mode=mode, seed=4, progress=False,
                                         sparse=sparse)
            runs[sparse] = (losses, {k: v.clone() for k, v in lm.model.state_dict().items()})
        (l_sparse, w_sparse), (l_masked, w_masked) = runs[True], runs[False]
        assert l_sparse == pytest.approx(l_masked, rel=1e-10)
        changed = [k for k in start if not torch.equal(w_sparse[k], start[k])]
        assert changed and all("mlp" in k for k in changed), changed
        for k in start:
            assert torch.allclose(w_sparse[k], w_masked[k], rtol=1e-9, atol=1e-12), (family, mode, k)
        assert not any(p.requires_grad for p in lm.model.parameters())
    lm.model.load_state_dict(start)

    def stop(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restricted_finetune(lm, site, neurons, batches, lr=0.05, epochs=2, progress=False, after_epoch=stop)
    stopped = {k: v.clone() for k, v in lm.model.state_dict().items()}
    lm.model.load_state_dict(start)
    restricted_finetune(lm, site, neurons, batches, lr=0.05, epochs=1, progress=False, sparse=False)
    assert all(torch.allclose(stopped[k], v, rtol=1e-9, atol=1e-12) for k, v in lm.model.state_dict().items())
    assert all(len(m._forward_hooks) == 0 for m in lm.model.modules())
