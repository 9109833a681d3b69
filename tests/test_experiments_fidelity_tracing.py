"""Notebook 01's causal tracing as ROME runs it (issue 22): several noise draws averaged,
restoration windows. The batched multi-draw trace against the slow path (each draw traced
alone, the traces averaged) and against plain torch hooks (every draw's corrupted and
restored run by hand, probabilities averaged as ROME's trace_with_patch does)."""
from __future__ import annotations

import copy

import pytest
import torch

from neuronloc.localization import Fact, causal_trace
from neuronloc.localization.validation import localize, trace_of
from neuronloc.store import Store

from conftest import tiny_llama

SEED = 5


@pytest.fixture(scope="module")
def lm():
    lm = tiny_llama(seed=4, num_hidden_layers=4)
    lm.model.double()
    return lm


def fact():
    return Fact(torch.tensor([1, 5, 9, 13, 7, 22, 30]), range(2, 4), torch.tensor([40]))


def hand_prob(lm, f, draws, restore=None):
    """Mean over `draws` rows of P(answer): row d's subject embeddings + 3 x std x eps_d, eps_d ~
    N(0, 1) `[n_subject, d_model]` from a generator seeded with SEED + d; with restore=(layers,
    token), the MLP outputs of those layers at that token set back to their clean values."""
    model, layers = lm.model, lm.model.model.layers
    clean, handles = {}, []
    if restore:
        for l in restore[0]:
            handles.append(layers[l].mlp.register_forward_hook(
                lambda mod, args, out, l=l: clean.__setitem__(l, out.detach().clone())))
        with torch.no_grad():
            model(input_ids=f.prompt[None])
        for h in handles:
            h.remove()
        handles = []
    emb = model.get_input_embeddings()
    std = float(emb.weight.float().std())
    eps = torch.stack([torch.randn(len(f.subject), emb.weight.shape[1], generator=torch.Generator().manual_seed(SEED + d))
                       for d in range(draws)]).to(emb.weight.dtype)

    def corrupt(mod, args, out):
        out = out.clone()
        out[:, f.subject.start:f.subject.stop] += 3 * std * eps
        return out
    handles.append(emb.register_forward_hook(corrupt))
    if restore:
        token = restore[1]
        for l in restore[0]:
            def put(mod, args, out, l=l):
                out = out.clone()
                out[:, token] = clean[l][0, token]
                return out
            handles.append(layers[l].mlp.register_forward_hook(put))
    try:
        with torch.no_grad():
            logits = model(input_ids=f.prompt[None].expand(draws, -1)).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    return float(logits.double().softmax(-1)[:, f.target].mean())


def test_multi_draw_trace_is_the_mean_of_single_draw_traces(lm):
    f = fact()
    for window in (1, 10):
        fast = causal_trace(lm, f, kinds=("mlp.out", "resid.pre"), seed=SEED, draws=4, window=window)
        slow = [causal_trace(lm, f, kinds=("mlp.out", "resid.pre"), seed=SEED + d, draws=1, window=window) for d in range(4)]
        assert fast.corrupted == pytest.approx(sum(s.corrupted for s in slow) / 4, rel=1e-10)
        for kind in ("mlp.out", "resid.pre"):
            mean = torch.stack([s.restored[kind] for s in slow]).mean(0)
            assert torch.allclose(fast.restored[kind], mean, rtol=1e-6, atol=1e-12), (window, kind)  # the grid is float32
        assert fast.params["draws"] == 4 and fast.params["window"] == window
    # the draws differ: one draw alone is not the average
    assert slow[0].corrupted != pytest.approx(fast.corrupted, rel=1e-6)


def test_multi_draw_trace_against_plain_hooks(lm):
    f = fact()
    trace = causal_trace(lm, f, kinds=("mlp.out",), seed=SEED, draws=3, window=2, tokens=["subject_last", 5])
    assert trace.corrupted == pytest.approx(hand_prob(lm, f, 3), rel=1e-9)
    # window 2 at layer l restores layers l - 1 and l (ROME: range(l - w // 2, l - (-w // 2)), clipped)
    for layer, run in ((0, [0]), (1, [0, 1]), (3, [2, 3])):
        for token in (3, 5):
            assert trace.restored["mlp.out"][layer, token].item() == pytest.approx(
                hand_prob(lm, f, 3, (run, token)), rel=1e-6), (layer, token)  # float32 grid
    assert trace.restored["mlp.out"][:, [0, 1, 2, 4, 6]].isnan().all()  # only the asked tokens are restored
    wide = causal_trace(lm, f, kinds=("mlp.out",), seed=SEED, draws=3, window=10, tokens=["subject_last"])
    # window 10 in a 4-layer model: every layer's window covers all 4 layers -> restoring every MLP at the subject's last token
    every = hand_prob(lm, f, 3, ([0, 1, 2, 3], 3))
    assert wide.restored["mlp.out"][:, 3].tolist() == pytest.approx([every] * 4, rel=1e-6)


def test_draws_and_window_must_be_positive(lm):
    with pytest.raises(ValueError, match="draws >= 1"):
        causal_trace(lm, fact(), draws=0)
    with pytest.raises(ValueError, match="window >= 1"):
        causal_trace(lm, fact(), window=0)


def test_localize_traces_with_the_given_draws_and_window_and_caches_them(lm, tmp_path):
    f, store = fact(), Store(tmp_path)
    loc = localize(lm, f, store, steps=3, top_layers=2, seed=SEED, draws=3, window=2)
    trace = causal_trace(lm, f, kinds=("mlp.out",), seed=SEED, draws=3, window=2, tokens=["subject_last"])
    assert loc.layers == trace.top_layers(2, "mlp.out", "subject_last")
    assert torch.equal(loc.trace.restored["mlp.out"][:, 3], trace.restored["mlp.out"][:, 3])
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3  # KN scores, the trace, the circuit
    # the window-1 sensitivity trace is another cache entry; the same call again reads the store
    one = trace_of(lm, f, store, seed=SEED, draws=3, window=1)
    assert len(list(tmp_path.iterdir())) == 4 and one.params["window"] == 1
    again = trace_of(lm, f, store, seed=SEED, draws=3, window=2)
    assert len(list(tmp_path.iterdir())) == 4 and torch.equal(again.restored["mlp.out"][:, 3], trace.restored["mlp.out"][:, 3])


def test_rome_sweep_is_layer_sweep_cached_layer_by_layer(tmp_path):
    from neuronloc.experiments.fidelity import rome_sweep
    from neuronloc.localization.validation import layer_sweep

    lm = tiny_llama(seed=2)
    covs = {l: torch.eye(48) + 0.1 for l in range(3)}
    store = Store(tmp_path)
    args = ("Music by Toko", "Toko", "piano", "drums")
    few = dict(steps=3)  # a short value optimisation: the test is about the rows and the cache
    rows = rome_sweep(lm, store, *args, [0, 2], ["The music of Toko"], covs, 7, **few)
    assert rows == layer_sweep(lm, *args, [0, 2], ["The music of Toko"], covs=covs, **few)
    assert len(list(tmp_path.iterdir())) == 2  # one entry per layer
    more = rome_sweep(lm, store, *args, [0, 1, 2], ["The music of Toko"], covs, 7, **few)
    assert len(list(tmp_path.iterdir())) == 3  # only layer 1 is new
    assert [r for r in more if r["layer"] != 1] == rows
    assert [(r["layer"], r["prompt"]) for r in more] == [(l, p) for l in (None, 0, 1, 2) for p in ("edited", "paraphrase 0")]
    rome_sweep(lm, store, *args, [0], ["The music of Toko"], covs, 8, **few)  # another covariance corpus size: a new entry
    rome_sweep(lm, store, *args, [0], ["The music of Toko"], covs, 7, steps=4)  # other edit parameters: a new entry
    assert len(list(tmp_path.iterdir())) == 5


def test_the_prefix_cache_gives_the_whole_prompt_runs(lm):
    """The positions before the first restored token run once per draw (their keys and values
    reused): the same trace as running every row over the whole prompt."""
    f = fact()
    for tokens, window in ((["subject_last"], 10), ([2, 5], 1), ([6], 2)):
        fast = causal_trace(lm, f, kinds=("mlp.out", "resid.pre"), seed=SEED, draws=3, window=window, tokens=tokens)
        slow = causal_trace(lm, f, kinds=("mlp.out", "resid.pre"), seed=SEED, draws=3, window=window, tokens=tokens, prefix=False)
        assert fast.corrupted == slow.corrupted
        for kind in ("mlp.out", "resid.pre"):
            assert torch.allclose(fast.restored[kind], slow.restored[kind], rtol=1e-6, atol=1e-12, equal_nan=True), (tokens, kind)
    # and against plain hooks at the subject's last token (the noise of the subject's first token lies in the prefix)
    trace = causal_trace(lm, f, kinds=("mlp.out",), seed=SEED, draws=2, window=1, tokens=["subject_last"])
    assert trace.restored["mlp.out"][1, 3].item() == pytest.approx(hand_prob(lm, f, 2, ([1], 3)), rel=1e-6)


def test_layers_batched_into_forwards_of_any_size_give_the_same_trace(lm):
    f = fact()
    one = causal_trace(lm, f, kinds=("mlp.out",), seed=SEED, draws=3, window=2, tokens=["subject_last", 5])
    for max_rows in (1, 6, 13):  # a layer per forward, two layers, four layers (one forward)
        other = causal_trace(lm, f, kinds=("mlp.out",), seed=SEED, draws=3, window=2, tokens=["subject_last", 5], max_rows=max_rows)
        assert torch.allclose(one.restored["mlp.out"], other.restored["mlp.out"], rtol=1e-6, atol=1e-12, equal_nan=True), max_rows
    part = causal_trace(lm, f, kinds=("mlp.out",), seed=SEED, draws=3, window=2, tokens=["subject_last"], layers=[3, 1], max_rows=3)
    assert part.restored["mlp.out"][[0, 2]].isnan().all()
    assert torch.allclose(part.restored["mlp.out"][[1, 3], 3], one.restored["mlp.out"][[1, 3], 3], rtol=1e-6)


@pytest.mark.parametrize("family", ["llama (4 layers)", "llama", "gemma2", "gemma3_text", "gpt2", "gpt_neox"])
def test_restarted_rows_give_the_trace_of_rows_run_from_the_first_layer(family):
    """Rows that enter the batch at their window's first layer (the corrupted run's input
    there) give the trace of rows run through every layer, for every kind, window and token
    set, with and without a cached prefix; on families with fused or parallel blocks,
    absolute positions and sliding windows (the tiny models of test_sites, float64)."""
    from conftest import CharTokenizer
    from test_sites import build

    from neuronloc.models import from_module

    if family == "llama (4 layers)":
        lm = tiny_llama(seed=4, num_hidden_layers=4)
        lm.model.double()
    else:
        lm = from_module(copy.deepcopy(build(family)).double(), CharTokenizer(), name=family)  # 2 layers (build is shared)
    f = Fact(torch.tensor([1, 5, 9, 13, 7, 22, 30, 11, 4]), range(2, 4), torch.tensor([40]))
    n_layers = lm.site("mlp.out").n_layers
    for tokens, window, layers, max_rows in ((["subject_last"], 10, None, 320), ([2, 5], 1, None, 320),
                                             (None, 3, [n_layers - 1, 0], 7), (["subject_last", 6], 2, None, 5)):
        for prefix in (True, False):
            kw = dict(kinds=("mlp.out", "attn.out", "resid.pre"), seed=SEED, draws=3, window=window, tokens=tokens,
                      layers=layers, max_rows=max_rows, prefix=prefix)
            fast, slow = causal_trace(lm, f, restart=True, **kw), causal_trace(lm, f, restart=False, **kw)
            assert fast.corrupted == slow.corrupted
            for kind in kw["kinds"]:
                assert fast.restored[kind].shape == (n_layers, len(f.prompt))
                assert torch.allclose(fast.restored[kind], slow.restored[kind], rtol=1e-9, atol=1e-12, equal_nan=True), \
                    (family, tokens, window, prefix, kind)
                assert (~fast.restored[kind].isnan()).sum() == len(layers or range(n_layers)) * len(tokens or f.prompt)


def test_a_restarted_row_that_is_not_independent_is_caught(lm, monkeypatch):
    """The unrestored condition of the first forward is checked against the corrupted run."""
    import neuronloc.localization.causal_tracing as ct

    real = ct._target_probs
    monkeypatch.setattr(ct, "_target_probs", lambda *a, **k: real(*a, **k) * (1.5 if len(a) > 4 and a[4] is not None and
                                                                             a[4].layers[0].keys.shape[0] > 3 else 1.0))
    f = fact()
    lm32 = tiny_llama(seed=4, num_hidden_layers=4)
    with pytest.raises(RuntimeError, match="not independent"):
        causal_trace(lm32, f, kinds=("mlp.out",), seed=SEED, draws=3, window=2, tokens=["subject_last"])
