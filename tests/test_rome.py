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
