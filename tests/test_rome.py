"""ROME against its definition: the edit raises the new object's probability, changes one
matrix by a rank-one term with W_new k* = v*, restores exactly; the key covariance
against keys recorded by plain hooks; GPT-2's [in, out] weights; the Store cache."""
from __future__ import annotations

import copy

import pytest
import torch

from neuronloc.localization import applied, corpus_texts, key_moments, make_fact, rome_edit
from neuronloc.localization.facts import last_probs
from neuronloc.store import Store

from conftest import CharTokenizer, tiny_llama

TEXTS = [f"the quick brown fox {i} jumps over the lazy dog" for i in range(40)] + \
        [f"a fact: city {i} lies in country {i % 7}." for i in range(40)]
# a random model moves little: a long enough, unclamped search (ROME's clamp is relative to |v0|)
FAST = dict(corpus=TEXTS, steps=20, lr=0.1, clamp=1e4, weight_decay=0.0)


@pytest.fixture(scope="module")
def lm():
    lm = tiny_llama(seed=1)
    lm.model.double()
    return lm


def test_edit_raises_the_new_object_and_is_one_rank_one_matrix_change(lm):
    fact = make_fact(lm, "Music by Toko", "Toko", "piano")
    before = float(last_probs(lm, fact.prompt)[0, fact.target])
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    edit = rome_edit(lm, "Music by Toko", 1, subject="Toko", new="piano", **FAST)
    with applied(lm, edit):
        after = float(last_probs(lm, fact.prompt)[0, fact.target])
        changed = [k for k, v in lm.model.state_dict().items() if not torch.equal(v, state[k])]
        assert changed == ["model.layers.1.mlp.down_proj.weight"]
        W = lm.model.model.layers[1].mlp.down_proj.weight
        diff = W - state[changed[0]]
        assert torch.linalg.matrix_rank(diff).item() == 1
        assert torch.allclose(diff, edit.delta, rtol=1e-6, atol=1e-12)
        assert torch.allclose(W @ edit.key, edit.value, rtol=1e-9, atol=1e-12)  # W_new k* = v*
    assert after > 1.5 * before
    assert all(torch.equal(v, state[k]) for k, v in lm.model.state_dict().items())  # restored exactly


def test_restore_is_exact_when_the_body_raises(lm):
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    edit = rome_edit(lm, "Music by Toko", 2, subject="Toko", new="piano", **{**FAST, "steps": 2})
    with pytest.raises(RuntimeError, match="boom"), applied(lm, edit):
        raise RuntimeError("boom")
    assert all(torch.equal(v, state[k]) for k, v in lm.model.state_dict().items())


def test_key_moments_equal_keys_recorded_by_plain_hooks(lm, tmp_path):
    layer, texts = 1, TEXTS[:9]
    keys = []
    hook = lm.model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(lambda m, args: keys.append(args[0][0]))
    try:
        with torch.no_grad():
            for t in texts:  # one unpadded text at a time
                lm.model(input_ids=torch.tensor(lm.tokenizer(t)["input_ids"])[None])
    finally:
        hook.remove()
    k = torch.cat(keys).double()
    hand = k.T @ k / len(k)
    store = Store(tmp_path)
    C = key_moments(lm, [layer], texts, batch_size=4, store=store)[layer]
    assert torch.allclose(C.double(), hand, rtol=1e-4, atol=1e-6)
    assert len(list(tmp_path.iterdir())) == 1
    again = key_moments(lm, [layer], texts, batch_size=4, store=store)[layer]  # from the cache
    assert torch.equal(again, C)


def test_gpt2_conv1d_weight_is_edited_in_its_in_out_orientation():
    from test_sites import build
    from neuronloc.models import from_module
    model = build("gpt2")
    lm = from_module(model, CharTokenizer(64), name="gpt2")
    edit = rome_edit(lm, "Music by Toko", 0, subject="Toko", new="piano", **{**FAST, "steps": 3})
    W0 = model.transformer.h[0].mlp.c_proj.weight.detach().clone()  # [in, out]
    with applied(lm, edit):
        W = model.transformer.h[0].mlp.c_proj.weight
        assert torch.allclose((W - W0).T, edit.delta.float(), atol=1e-6)
        assert torch.allclose(edit.key.float() @ W, edit.value.float(), rtol=1e-4, atol=1e-5)
    assert torch.equal(model.transformer.h[0].mlp.c_proj.weight, W0)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_families_with_a_normed_mlp_output_are_edited_at_the_projection(family):
    """Gemma 2/3 norm the MLP output (post_feedforward_layernorm) before the residual add: the
    value is optimised at the down-projection's output, through the norm; the edit changes
    that layer's down_proj only, moves the new object, and the projection then outputs v* at
    the subject's last token, which the norm receives."""
    from test_sites import build
    from neuronloc.models import from_module
    model = copy.deepcopy(build(family)).double()  # build() is cached: other tests share its model
    lm = from_module(model, CharTokenizer(64), name=family)
    fact = make_fact(lm, "Music by Toko", "Toko", "piano")
    before = float(last_probs(lm, fact.prompt)[0, fact.target])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    edit = rome_edit(lm, "Music by Toko", 1, subject="Toko", new="piano", **FAST)
    seen = []
    norm = model.model.layers[1].post_feedforward_layernorm
    hook = norm.register_forward_pre_hook(lambda m, args: seen.append(args[0][0, fact.subject_last].detach().clone()))
    try:
        with applied(lm, edit):
            after = float(last_probs(lm, fact.prompt)[0, fact.target])
            changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    finally:
        hook.remove()
    assert changed == ["model.layers.1.mlp.down_proj.weight"]
    assert torch.allclose(seen[-1], edit.value, rtol=1e-6, atol=1e-9)  # what the norm receives is v*
    # the norm bounds what one position's MLP output can add: the random tiny model moves less than LLaMA's
    assert after > 1.1 * before
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_counterfact_corpus_reads_the_train_split():
    texts = corpus_texts("counterfact", 7)
    assert len(texts) == 7 and all(isinstance(t, str) and t for t in texts)
    assert texts[0].endswith(".")  # prompt + true object
    with pytest.raises(ValueError, match="unknown corpus"):
        corpus_texts("wikipedia")


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "gpt_neox"])
def test_value_loss_in_one_batch_equals_one_forward_per_prompt(family):
    """`_value_loss` (the prompts and the essence prompt right padded in one forward, delta
    at each row's own position) equals ROME's loss written prompt by prompt: the NLL of each
    prompt (prompts of different lengths: ROME's context prefixes) and the essence KL from
    its own forward; and so does its gradient in delta."""
    from test_sites import build
    from neuronloc.localization.facts import subject_span
    from neuronloc.engine import logits_from
    from neuronloc.hooks import Edit, intervene
    from neuronloc.localization.rome import _essence_logprobs, _value_loss, value_site

    def _nll(lm, fact, layer, delta):  # ROME's loss term of one prompt, in its own forward
        ids = torch.cat([fact.prompt, fact.answer[:-1]])[None]
        with intervene(lm.model, value_site(lm), [Edit(layer, None, "add", delta, positions=[fact.subject_last])]):
            logits = lm.model(input_ids=ids, **logits_from(lm.model, len(fact.answer))).logits[0, -len(fact.answer):]
        lp = logits.double().log_softmax(-1)
        return -lp[torch.arange(len(fact.answer)), fact.answer].mean()
    from neuronloc.models import from_module
    model = copy.deepcopy(build(family)).double()
    lm = from_module(model, CharTokenizer(64), name=family)
    facts = [make_fact(lm, p + "Music by Toko", "Toko", "piano") for p in ("", "A. ", "Some text here. ")]
    ids = torch.tensor(lm.tokenizer("Toko is a", add_special_tokens=True)["input_ids"])
    position = subject_span(lm.tokenizer, "Toko is a", "Toko")[-1]
    layer = 1
    with torch.no_grad():
        essence = (ids, position, _essence_logprobs(lm, ids, position, layer, None))
    d = value_site(lm).n_inner
    delta = (0.5 * torch.randn(d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).requires_grad_(True)
    with torch.enable_grad():
        ours = _value_loss(lm, facts, essence, layer, delta, kl_weight=0.3)
        g_ours, = torch.autograd.grad(ours, delta)
        nll = torch.stack([_nll(lm, f, layer, delta) for f in facts]).mean()
        after = _essence_logprobs(lm, ids, position, layer, delta)
        theirs = nll + 0.3 * (essence[2].exp() * (essence[2] - after)).sum()
        g_theirs, = torch.autograd.grad(theirs, delta)
    assert len({len(f.prompt) for f in facts}) == 3
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-7, atol=1e-12)
    no_essence = _value_loss(lm, facts, None, layer, delta.detach(), kl_weight=0.3)
    assert no_essence.item() == pytest.approx(nll.item(), rel=1e-9)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_answer_logprobs_in_one_batch_equal_one_forward_per_pair(family):
    """`validation.answer_logprobs` (right-padded batch) equals `answer_logprob` pair by pair,
    for prompts and answers of different lengths."""
    from test_sites import build
    from neuronloc.localization.validation import answer_logprob, answer_logprobs
    from neuronloc.models import from_module
    lm = from_module(copy.deepcopy(build(family)).double(), CharTokenizer(64), name=family)
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randint(2, 64, (n,), generator=g), torch.randint(2, 64, (k,), generator=g))
             for n, k in ((5, 1), (9, 3), (3, 2), (7, 1))]
    batched = answer_logprobs(lm, pairs)
    alone = [answer_logprob(lm, p, a) for p, a in pairs]
    assert len(set(alone)) == 4
    assert batched == pytest.approx(alone, rel=1e-10)


@pytest.mark.parametrize("family", ["llama (3 layers)", "gemma2", "gpt2"])
def test_edits_optimised_together_equal_each_edit_alone(family):
    """`rome_edits` (every layer's rows in one forward, one Adam over the deltas) gives each
    layer the edit `rome_edit` makes alone: the same key, value, update and final loss, in any
    layer order; the essence KL and the clamp act per layer."""
    from test_sites import build
    from neuronloc.localization import rome_edits
    from neuronloc.models import from_module

    if family == "llama (3 layers)":
        lm = tiny_llama(seed=1)
        lm.model.double()
    else:
        lm = from_module(copy.deepcopy(build(family)).double(), CharTokenizer(64), name=family)
    n_layers = lm.site("ffn.mid").n_layers
    layers = list(range(n_layers))[::-1]
    params = {**FAST, "steps": 6, "lr": 0.3, "clamp": 0.2, "weight_decay": 0.1}  # the clamp binds within 6 steps
    together = rome_edits(lm, "Music by Toko", layers, subject="Toko", new="piano", **params)
    assert [e.layer for e in together] == layers
    for edit in together:
        alone = rome_edit(lm, "Music by Toko", edit.layer, subject="Toko", new="piano", **params)
        for name in ("u", "r", "key", "value"):
            assert torch.allclose(getattr(edit, name), getattr(alone, name), rtol=1e-8, atol=1e-12), (family, edit.layer, name)
        assert edit.params["final_loss"] == pytest.approx(alone.params["final_loss"], rel=1e-9)
    from neuronloc.localization.rome import _keys, _variants
    facts = _variants(lm, "Music by Toko", "Toko", "piano", ())
    v0 = {l: v for l, (_, v) in _keys(lm, facts, layers).items()}
    ratios = [float(e.r.norm()) / float(v0[e.layer].norm()) for e in together]
    assert all(r <= 0.2 * (1 + 1e-9) for r in ratios) and any(r == pytest.approx(0.2, rel=1e-9) for r in ratios), ratios
