"""capture / intervene against plain torch hooks on the tiny random LLaMA (`tiny`:
3 layers x 48 neurons at mlp.down_proj's input), plus one smoke test on SmolLM2."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import transformers as tf

from conftest import tiny_llama
from neuronloc.hooks import Edit, capture, excite, intervene, neuron_hooks, silence
from neuronloc.sites import resolve_site

PROMPTS = ["Q: 2+2? A", "Q: colour of sky? A", "hi"]  # different lengths: rows are left-padded


@pytest.fixture(scope="module")
def batch(tiny):
    return tiny.encode(PROMPTS)


@contextmanager
def down_proj_inputs(model, layers=None):
    """Record the input of each layer's mlp.down_proj with plain pre-hooks (no neuronloc).

    Registered on entry, so inside an `intervene` block it sees the edited neurons.
    """
    seen, handles = {}, []
    blocks = model.model.layers
    for layer in range(len(blocks)) if layers is None else layers:
        hook = lambda module, args, layer=layer: seen.__setitem__(layer, args[0].detach().clone())
        handles.append(blocks[layer].mlp.down_proj.register_forward_pre_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def plain(lm, batch) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Unhooked run: the neuron tensor of every layer `[batch, pos, n_inner]` and the logits."""
    with torch.no_grad(), down_proj_inputs(lm.model) as acts:
        logits = lm.model(**batch).logits
    return acts, logits


def n_hooks(model) -> int:
    """Hooks on the model's modules, besides the one `models.contiguous_input` keeps on the head."""
    kept = int(getattr(model.get_output_embeddings(), "_neuronloc_contiguous", False))
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) - kept


# ---------------------------------------------------------------- capture

@pytest.mark.parametrize("positions, index", [("last", [-1]), ("all", slice(None)), ([0, 2], [0, 2])])
def test_capture_matches_plain_hook(tiny, batch, positions, index):
    """capture records the same neurons as a plain pre-hook, at the requested positions."""
    expected, _ = plain(tiny, batch)
    with torch.no_grad(), capture(tiny.model, tiny.site(), positions=positions) as cap:
        tiny.model(**batch)
    assert sorted(cap.acts) == [0, 1, 2]
    for layer, acts in cap.acts.items():
        assert torch.equal(acts, expected[layer][:, index])
    assert cap.stack().shape == (3, len(PROMPTS), *expected[0][:, index].shape[1:])


def test_capture_chosen_layers(tiny, batch):
    """capture(layers=...) hooks only those layers."""
    with torch.no_grad(), capture(tiny.model, tiny.site(), layers=[1]) as cap:
        tiny.model(**batch)
    assert list(cap.acts) == [1]


def _target(logits: torch.Tensor) -> torch.Tensor:
    """A scalar read out at the last position: summed log-probability of token 7."""
    return logits[:, -1].log_softmax(-1)[:, 7].sum()


@pytest.mark.parametrize("positions, index", [("last", [-1]), ("all", slice(None))])
def test_capture_grad_matches_autograd(tiny, batch, positions, index):
    """cap.grad(layer) equals torch.autograd.grad of the target w.r.t. every layer's neurons."""
    model = tiny.model
    embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_()
    acts = {}  # the neuron tensors themselves (not detached): nodes of the autograd graph
    hooks = [model.model.layers[l].mlp.down_proj.register_forward_pre_hook(
        lambda m, args, l=l: acts.__setitem__(l, args[0])) for l in range(3)]
    try:
        with torch.enable_grad():
            target = _target(model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits)
            expected = torch.autograd.grad(target, [acts[l] for l in range(3)])
    finally:
        for h in hooks:
            h.remove()

    with capture(model, tiny.site(), positions=positions, grad=True) as cap:
        _target(model(**batch).logits).backward()
    for layer in range(3):
        torch.testing.assert_close(cap.grad(layer), expected[layer][:, index], rtol=1e-5, atol=1e-7)
    assert expected[0][:, index].abs().sum() > 0  # the gradient reaches the first layer


def test_grad_before_backward_is_an_error(tiny, batch):
    """cap.grad before any backward() says what to do."""
    with capture(tiny.model, tiny.site(), grad=True) as cap:
        tiny.model(**batch)
    with pytest.raises(RuntimeError, match="backward"):
        cap.grad(0)


# ---------------------------------------------------------------- intervene

LAYER, NEURONS = 1, [3, 7, 11]
OPS = {
    "set": (0.5, lambda a, v: torch.full_like(a, v)),
    "scale": (2.0, lambda a, v: v * a),
    "add": (0.75, lambda a, v: a + v),
    "add_sign": (-1.5, lambda a, v: a + v * torch.sign(a)),
}


def edited_run(lm, batch, edits, positions="last") -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Neurons as the next module sees them, and the logits, under `edits`."""
    with torch.no_grad(), intervene(lm.model, lm.site(), edits, positions=positions), \
            down_proj_inputs(lm.model) as acts:
        logits = lm.model(**batch).logits
    return acts, logits


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("positions, index", [("last", [-1]), ([1, 3], [1, 3])])
def test_op_changes_only_the_target(tiny, batch, op, positions, index):
    """Each op edits exactly the chosen neurons at the chosen positions; the rest stays bitwise equal."""
    value, fn = OPS[op]
    before, logits_before = plain(tiny, batch)
    after, logits_after = edited_run(tiny, batch, [Edit(LAYER, NEURONS, op, value)], positions)

    expected = before[LAYER].clone()
    rows, pos, cols = torch.arange(len(PROMPTS))[:, None, None], torch.tensor(index)[None, :, None], torch.tensor(NEURONS)
    expected[rows, pos, cols] = fn(before[LAYER][rows, pos, cols], value)
    assert torch.equal(after[LAYER], expected)
    assert not torch.equal(after[LAYER], before[LAYER])
    assert torch.equal(after[0], before[0])  # upstream layers untouched
    assert not torch.equal(logits_after, logits_before)


def test_rows_get_their_own_edit(tiny, batch):
    """Edits with rows= apply a different value to each batch row, and nothing to other rows."""
    before, _ = plain(tiny, batch)
    values = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    edits = [Edit(LAYER, NEURONS, "set", values, rows=[0, 2]), Edit(LAYER, NEURONS, "add", 10.0, rows=[1])]
    after, _ = edited_run(tiny, batch, edits)

    expected = before[LAYER].clone()
    expected[0, -1, NEURONS] = values[0]
    expected[2, -1, NEURONS] = values[1]
    expected[1, -1, NEURONS] += 10.0
    assert torch.equal(after[LAYER], expected)


def test_edits_of_one_neuron_compose_in_order(tiny, batch):
    """add, then scale, then add_sign on one neuron gives ((a + 1) * 3) + 0.5 * sign(a)."""
    before, _ = plain(tiny, batch)
    edits = [Edit(LAYER, [5], "add", 1.0), Edit(LAYER, [5], "scale", 3.0), Edit(LAYER, [5], "add_sign", 0.5),
             Edit(LAYER, [6], "scale", 3.0), Edit(LAYER, [6], "add", 1.0),  # scale first: 3a + 1
             Edit(LAYER, [8], "set", 2.0), Edit(LAYER, [8], "scale", -1.0)]
    after, _ = edited_run(tiny, batch, edits)
    a = before[LAYER][:, -1]
    torch.testing.assert_close(after[LAYER][:, -1, 5], (a[:, 5] + 1.0) * 3.0 + 0.5 * torch.sign(a[:, 5]))
    torch.testing.assert_close(after[LAYER][:, -1, 6], 3.0 * a[:, 6] + 1.0)
    assert torch.equal(after[LAYER][:, -1, 8], torch.full((len(PROMPTS),), -2.0))


def test_silence_and_excite(tiny, batch):
    """silence sets neurons to 0 and excite doubles them; empty neuron lists make no edit."""
    before, _ = plain(tiny, batch)
    edits = silence({0: [1, 2], 2: []}) + excite({0: [4]})
    after, _ = edited_run(tiny, batch, edits)
    assert [(e.layer, e.op) for e in edits] == [(0, "set"), (0, "scale")]
    assert torch.equal(after[0][:, -1, [1, 2]], torch.zeros(len(PROMPTS), 2))
    assert torch.equal(after[0][:, -1, 4], 2 * before[0][:, -1, 4])


def test_learnable_value_gets_gradients_every_forward(tiny, batch):
    """An edit value that requires grad is read afresh on each forward (e.g. in an optimizer loop)."""
    delta = torch.zeros(len(NEURONS), requires_grad=True)
    with intervene(tiny.model, tiny.site(), [Edit(LAYER, NEURONS, "add", delta)]):
        grads = []
        for _ in range(2):
            _target(tiny.model(**batch).logits).backward()
            grads.append(delta.grad.clone())
            with torch.no_grad():
                delta += 1.0
            delta.grad = None
    assert grads[0].abs().sum() > 0
    assert not torch.equal(grads[0], grads[1])  # the second forward used the updated value


@pytest.mark.parametrize("edit, match", [
    (Edit(LAYER, [48], "set"), "neuron index out of range"),
    (Edit(LAYER, [-1], "set"), "neuron index out of range"),
    (Edit(LAYER, [0], "set", rows=[3]), "rows .* out of range"),
    (Edit(3, [0], "set"), "layer 3 out of range"),
])
def test_out_of_range_raises(tiny, batch, edit, match):
    """A neuron, row or layer that does not exist is an IndexError, and no hook is left behind."""
    with pytest.raises(IndexError, match=match):
        with torch.no_grad(), intervene(tiny.model, tiny.site(), [edit]):
            tiny.model(**batch)
    assert n_hooks(tiny.model) == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(op="double"), "unknown op"),
    (dict(op="set", value=float("nan")), "NaN or inf"),
    (dict(op="add", value=torch.tensor([1.0, float("inf")])), "NaN or inf"),
    (dict(op="patch", value=torch.full((1, 1, 2), float("nan"))), "NaN or inf"),
    (dict(op="patch", value=1.0), "recorded values"),
    (dict(op="noise", value=-1.0), "standard deviation"),
    (dict(op="noise", value=torch.ones(2)), "standard deviation"),
    (dict(op="set", value=torch.zeros(1, 1, 1, 2)), "shape"),
    (dict(op="set", positions="first"), "positions must be"),
])
def test_bad_edit_is_refused_when_made(kwargs, match):
    """Unknown ops, NaN/inf values, a patch without recorded values, a negative noise std,
    a 4-d value and unknown positions are errors when the Edit is made."""
    with pytest.raises(ValueError, match=match):
        Edit(0, [1, 2], **kwargs)


@pytest.mark.parametrize("edit", [Edit(LAYER, NEURONS, "set", torch.ones(2)),
                                  Edit(LAYER, NEURONS, "set", torch.ones(2, 3), rows=[0]),
                                  Edit(LAYER, NEURONS, "patch", torch.ones(3, 2, 3))])
def test_value_of_the_wrong_shape_raises(tiny, batch, edit):
    """A value that does not fit rows x positions x neurons is a ValueError naming the shapes."""
    with pytest.raises(ValueError, match="does not fit"):
        with torch.no_grad(), intervene(tiny.model, tiny.site(), [edit]):
            tiny.model(**batch)
    assert n_hooks(tiny.model) == 0


def test_out_of_range_position_raises(tiny, batch):
    """A position beyond the sequence is an IndexError."""
    with pytest.raises(IndexError, match="out of range"):
        with torch.no_grad(), capture(tiny.model, tiny.site(), positions=[99]):
            tiny.model(**batch)


@pytest.mark.parametrize("raises", [False, True])
def test_hooks_removed_after_block(tiny, batch, raises):
    """After capture/intervene/neuron_hooks blocks (also ones that raise) no hook is left
    and outputs are unhooked."""
    _, expected = plain(tiny, batch)
    assert n_hooks(tiny.model) == 0
    resid = tiny.site("resid.pre")
    for block in (lambda: capture(tiny.model, tiny.site(), grad=True),
                  lambda: capture(tiny.model, tiny.site("attn.out")),
                  lambda: intervene(tiny.model, tiny.site(), silence({0: [1], 2: [3]})),
                  lambda: intervene(tiny.model, resid, [Edit(1, None, "noise", 1.0, positions="all")]),
                  lambda: neuron_hooks(tiny.model, resid, {0: lambda t: 2 * t, 2: lambda t: None})):
        try:
            with block():
                tiny.model(**batch)
                assert n_hooks(tiny.model) > 0
                if raises:
                    raise KeyError("body failed")
        except KeyError:
            assert raises
        assert n_hooks(tiny.model) == 0
        with torch.no_grad():
            assert torch.equal(tiny.model(**batch).logits, expected)


def test_last_position_on_left_padded_batch(tiny, batch):
    """positions='last' edits each row's last real token: each row behaves as if run alone."""
    edits = [Edit(LAYER, NEURONS, "set", 3.0)]
    after, logits = edited_run(tiny, batch, edits)
    assert (batch["attention_mask"][:, -1] == 1).all() and (batch["attention_mask"][:, 0] == 0).any()
    for row, prompt in enumerate(PROMPTS):
        alone, alone_logits = edited_run(tiny, tiny.encode([prompt]), edits)
        assert torch.equal(after[LAYER][row, -1, NEURONS], torch.full((3,), 3.0))
        torch.testing.assert_close(logits[row, -1], alone_logits[0, -1], rtol=1e-4, atol=1e-5)


def test_sliced_site_keeps_the_other_half():
    """An edit on Phi-3's ffn.up (second half of gate_up_proj) leaves the gate half untouched."""
    torch.manual_seed(0)
    model = tf.Phi3ForCausalLM(tf.Phi3Config(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                             num_attention_heads=4, pad_token_id=0, bos_token_id=1,
                                             eos_token_id=0)).eval()
    site = resolve_site(model, "ffn.up")
    ids = torch.randint(2, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    outputs = []
    for edits in ([], [Edit(0, [0, 23], "set", 9.0)]):
        seen = {}
        with torch.no_grad(), intervene(model, site, edits):
            handle = model.model.layers[0].mlp.gate_up_proj.register_forward_hook(
                lambda m, args, out: seen.__setitem__("out", out.clone()))
            model(input_ids=ids)
            handle.remove()
        outputs.append(seen["out"])
    expected = outputs[0].clone()
    expected[:, -1, [24, 47]] = 9.0
    assert torch.equal(outputs[1], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_capture_and_intervene_on_cuda(batch):
    """capture and intervene work on a model on the GPU and agree with the CPU."""
    cpu = tiny_llama()
    gpu = tiny_llama()
    gpu.model.to("cuda")
    with torch.no_grad(), capture(cpu.model, cpu.site(), positions="all") as on_cpu:
        cpu.model(**batch)
    cuda_batch = {k: v.cuda() for k, v in batch.items()}
    with torch.no_grad(), intervene(gpu.model, gpu.site(), [Edit(0, [1, 2], "set", 0.0)]), \
            capture(gpu.model, gpu.site(), positions="all") as on_gpu:
        gpu.model(**cuda_batch)
    assert on_gpu.acts[0].device.type == "cuda"
    assert torch.equal(on_gpu.acts[0][:, -1, [1, 2]].cpu(), torch.zeros(len(PROMPTS), 2))
    torch.testing.assert_close(on_gpu.acts[0][:, :-1].cpu(), on_cpu.acts[0][:, :-1], rtol=1e-4, atol=1e-5)
    with capture(gpu.model, gpu.site(), grad=True) as cap:
        _target(gpu.model(**cuda_batch).logits).backward()
    assert cap.grad(2).device.type == "cuda"


def test_edit_positions_override_the_block(tiny, batch):
    """An Edit's own positions replace the block's; edits with different positions compose
    in order where they meet: position 1 gets (a + 1) * 2, position 3 only a + 1."""
    before, _ = plain(tiny, batch)
    edits = [Edit(LAYER, [5], "add", 1.0, positions=[1, 3]), Edit(LAYER, [5], "scale", 2.0, positions=[1]),
             Edit(LAYER, [6], "set", 4.0)]  # the block's positions: the last one
    after, _ = edited_run(tiny, batch, edits)
    expected = before[LAYER].clone()
    expected[:, 1, 5] = (expected[:, 1, 5] + 1.0) * 2.0
    expected[:, 3, 5] += 1.0
    expected[:, -1, 6] = 4.0
    assert torch.equal(after[LAYER], expected)


def _resid_inputs(model, layer) -> dict:
    """The input hidden states of decoder layer `layer`, by a plain pre-hook (no neuronloc)."""
    seen = {}
    hook = lambda m, args, kwargs: seen.__setitem__("h", (args[0] if args else kwargs["hidden_states"]).clone())
    return seen, model.model.layers[layer].register_forward_pre_hook(hook, with_kwargs=True)


def test_patch_whole_layer_input_gives_the_source_run(tiny):
    """Patching every unit of resid.pre at layer 1 and every position with a source run's
    values gives the source run's logits: the layers above see only that input."""
    source, target = tiny.encode(["Q: 2+2? A"]), tiny.encode(["Q: 3+5? B"])
    site = tiny.site("resid.pre")
    with torch.no_grad(), capture(tiny.model, site, layers=[1], positions="all") as clean:
        expected = tiny.model(**source).logits
    with torch.no_grad(), intervene(tiny.model, site, [Edit(1, None, "patch", clean.acts[1])], positions="all"):
        patched = tiny.model(**target).logits
    torch.testing.assert_close(patched, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(tiny.model(**target).logits, expected)


def test_one_batch_restores_a_different_token_in_each_row(tiny):
    """Causal tracing's restore step, batched: row r patches the clean resid.pre of token
    p_r at layer 1; each row equals a single run patched by a plain hook."""
    clean_ids, corrupt_ids = tiny.encode(["Q: 2+2? A"]), tiny.encode(["Q: 3+5? B"])
    site, tokens = tiny.site("resid.pre"), [0, 3, 7]
    with torch.no_grad(), capture(tiny.model, site, layers=[1], positions="all") as clean:
        tiny.model(**clean_ids)
    rows = len(tokens)
    batch = {k: v.expand(rows, -1) for k, v in corrupt_ids.items()}
    edits = [Edit(1, None, "patch", clean.acts[1][:, [p]], rows=[r], positions=[p]) for r, p in enumerate(tokens)]
    with torch.no_grad(), intervene(tiny.model, site, edits):
        logits = tiny.model(**batch).logits
    for r, p in enumerate(tokens):
        def restore(m, args, kwargs, p=p):
            h = args[0].clone()
            h[:, p] = clean.acts[1][:, p]
            return (h, *args[1:]), kwargs
        handle = tiny.model.model.layers[1].register_forward_pre_hook(restore, with_kwargs=True)
        with torch.no_grad():
            alone = tiny.model(**corrupt_ids).logits
        handle.remove()
        torch.testing.assert_close(logits[r], alone[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(logits[0], logits[1])


def test_noise_is_seeded_and_the_same_in_every_row(tiny, batch):
    """noise adds std * eps with eps ~ N(0, 1) drawn from the seed, `[n_pos, k]`, shared by the rows."""
    before, _ = plain(tiny, batch)
    noise = lambda seed: [Edit(LAYER, NEURONS, "noise", 0.5, positions=[1, 3], seed=seed)]
    after, logits = edited_run(tiny, batch, noise(7))
    again, logits_again = edited_run(tiny, batch, noise(7))
    _, other = edited_run(tiny, batch, noise(8))
    eps = torch.randn(2, 3, generator=torch.Generator().manual_seed(7))
    expected = before[LAYER].clone()
    expected[:, 1:4:2, NEURONS] += 0.5 * eps
    torch.testing.assert_close(after[LAYER], expected, rtol=0, atol=1e-6)
    assert torch.equal(logits, logits_again) and not torch.equal(logits, other)


def test_resid_pre_hook_may_change_the_batch_size(tiny):
    """neuron_hooks on resid.pre may return more rows (ig appends rows at a layer): the
    layers above run on them, and repeated rows give the same logits as the original ones."""
    ids = tiny.encode(PROMPTS[:1])["input_ids"]
    with torch.no_grad():
        expected = tiny.model(input_ids=ids).logits[0]
        with neuron_hooks(tiny.model, tiny.site("resid.pre"), {1: lambda t: torch.cat([t, t])}):
            logits = tiny.model(input_ids=ids).logits
    assert logits.shape[0] == 2
    torch.testing.assert_close(logits[0], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits[1], expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- embedded model

@pytest.mark.model
def test_silencing_smollm2_neurons(smol):
    """Silencing 50 neurons of layer 10 at the last position changes the next-token logits and reads 0 there."""
    site, batch = smol.site(), smol.encode(["The capital of France is"])
    neurons = list(range(0, 1500, 30))
    others = [i for i in range(site.n_inner) if i not in neurons]
    with torch.no_grad():
        with capture(smol.model, site, layers=[10]) as plain_cap:
            before = smol.model(**batch).logits[0, -1]
        with intervene(smol.model, site, silence({10: neurons})), capture(smol.model, site, layers=[10]) as cap:
            after = smol.model(**batch).logits[0, -1]
    assert len(neurons) == 50 and plain_cap.acts[10][0, -1, neurons].abs().sum() > 0
    assert not torch.allclose(before, after)
    assert torch.equal(cap.acts[10][0, -1, neurons], torch.zeros(50))
    assert torch.equal(cap.acts[10][0, -1, others], plain_cap.acts[10][0, -1, others])
    assert n_hooks(smol.model) == 0


def test_count_passes_counts_forwards_backwards_and_rows():
    from conftest import tiny_llama
    from neuronloc.hooks import count_passes

    lm = tiny_llama()
    ids = torch.randint(2, 100, (3, 5))
    with count_passes(lm.model) as n:
        with torch.no_grad():
            lm.model(input_ids=ids)
        embeds = lm.model.get_input_embeddings()(ids[:2]).detach().requires_grad_()
        lm.model(inputs_embeds=embeds).logits.sum().backward()
    assert (n.forward, n.backward, n.rows) == (2, 1, 5)
    with torch.no_grad():
        lm.model(input_ids=ids)  # hooks gone after the block
    assert n.forward == 2
