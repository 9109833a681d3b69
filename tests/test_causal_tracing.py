"""Causal tracing against plain torch hooks: the corrupted/restored pair run by hand,
exact restoration at the layer-0 input, unaffected tokens before the subject, seeds."""
from __future__ import annotations

import pytest
import torch

from neuronloc.localization import Fact, causal_trace, make_fact
from neuronloc.localization.facts import last_probs

from conftest import tiny_llama

SEED = 3


@pytest.fixture(scope="module")
def lm():
    return tiny_llama(seed=1)


def fact(subject=range(2, 4)):
    ids = torch.randint(2, 128, (7,), generator=torch.Generator().manual_seed(0))
    return Fact(ids, subject, torch.tensor([5, 9]))


def hand_prob(lm, f, restore=None):
    """P(answer) with the subject embeddings corrupted by plain hooks (noise drawn as the
    documented N(0, 1) `[n_subject, d]` from the seed, times 3 x embedding std), and, with
    restore=(kind, layer, token), that site set back to its clean value by hand."""
    model = lm.model
    layers = model.model.layers
    modules = {"resid.pre": lambda l: layers[l], "mlp.out": lambda l: layers[l].mlp, "attn.out": lambda l: layers[l].self_attn}
    handles, clean = [], {}
    if restore:
        kind, layer, token = restore
        module = modules[kind](layer)
        if kind == "resid.pre":
            def record(mod, args, kwargs):
                clean["x"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
            handles.append(module.register_forward_pre_hook(record, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(
                lambda mod, args, out: clean.__setitem__("x", (out[0] if isinstance(out, tuple) else out).detach().clone())))
        with torch.no_grad():
            model(input_ids=f.prompt[None])
        handles.pop().remove()
    emb = model.get_input_embeddings()
    std = emb.weight.std()
    eps = torch.randn(len(f.subject), emb.weight.shape[1], generator=torch.Generator().manual_seed(SEED))

    def corrupt(mod, args, out):
        out = out.clone()
        out[:, f.subject.start:f.subject.stop] += 3 * std * eps
        return out
    handles.append(emb.register_forward_hook(corrupt))
    if restore:
        def put(x):
            x = x.clone()
            x[:, token] = clean["x"][:, token]
            return x
        if kind == "resid.pre":
            def pre(mod, args, kwargs):
                if args:
                    return (put(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": put(kwargs["hidden_states"])}
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            handles.append(module.register_forward_hook(
                lambda mod, args, out: (put(out[0]), *out[1:]) if isinstance(out, tuple) else put(out)))
    try:
        with torch.no_grad():
            logits = model(input_ids=f.prompt[None]).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return float(logits.double().softmax(-1)[f.target])


def test_indirect_effect_equals_a_hand_run_corrupted_restored_pair(lm):
    f = fact()
    trace = causal_trace(lm, f, seed=SEED)
    assert trace.corrupted == pytest.approx(hand_prob(lm, f), rel=1e-5)
    assert trace.clean == pytest.approx(float(last_probs(lm, f.prompt)[0, f.target]), rel=1e-6)
    for kind, layer, token in [("resid.pre", 1, 3), ("mlp.out", 0, 2), ("attn.out", 2, 6), ("resid.pre", 2, 5)]:
        restored = hand_prob(lm, f, (kind, layer, token))
        assert trace.restored[kind][layer, token].item() == pytest.approx(restored, rel=1e-5), (kind, layer, token)
        assert trace.effect(kind)[layer, token].item() == pytest.approx(restored - trace.corrupted, rel=1e-4, abs=1e-9)


def test_restoring_the_layer0_input_gives_the_clean_probability(lm):
    """One subject token: restoring it at the input of layer 0 undoes the corruption;
    tokens before the subject never see it, so restoring them changes nothing."""
    f = fact(range(3, 4))
    trace = causal_trace(lm, f, kinds=("resid.pre",), seed=SEED)
    assert trace.restored["resid.pre"][0, 3].item() == pytest.approx(trace.clean, rel=1e-5)
    assert trace.clean != pytest.approx(trace.corrupted, rel=1e-3)
    before = trace.restored["resid.pre"][:, :3]
    assert torch.allclose(before, torch.full_like(before, trace.corrupted), rtol=1e-5)


def test_noise_is_seeded_and_top_layers_rank_the_effect(lm):
    f = fact()
    a, b = causal_trace(lm, f, seed=1), causal_trace(lm, f, seed=1)
    assert a.corrupted == b.corrupted and all(torch.equal(a.restored[k], b.restored[k]) for k in a.restored)
    assert causal_trace(lm, f, kinds=(), seed=2).corrupted != a.corrupted
    best = a.effect("mlp.out").max(dim=1).values
    assert a.top_layers(2, "mlp.out") == torch.argsort(best, descending=True)[:2].tolist()
    assert a.top_layers(1, "resid.pre", token="subject_last") == [int(a.effect()[:, 3].argmax())]


def test_window_and_layers(lm):
    f = fact()
    trace = causal_trace(lm, f, kinds=("mlp.out",), window=3, layers=[1], seed=SEED)
    grid = trace.restored["mlp.out"]
    assert grid[0].isnan().all() and grid[2].isnan().all() and not grid[1].isnan().any()


def test_make_fact_finds_the_subject_tokens(lm):
    f = make_fact(lm, "Toko Yasuda plays the", "Yasuda", "piano")
    assert f.subject == range(5, 11)  # bos T o k o | " Y" a s u d a: the char tokenizer joins " Y"
    assert f.prompt[f.subject.start:f.subject.stop].tolist() == lm.tokenizer(" Yasuda", add_special_tokens=False)["input_ids"]
    assert f.answer.tolist() == lm.tokenizer(" piano", add_special_tokens=False)["input_ids"]
