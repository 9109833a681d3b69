"""Sites per architecture family on tiny random models (2 layers) of every family:
shapes; captured tensors against plain torch hooks, the MLP recomputed from its weights
and the model's own hidden_states; edits against the same edit by a plain hook."""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import pytest
import torch
import transformers as tf

from neuronloc.hooks import Edit, capture, intervene
from neuronloc.sites import FAMILIES, UnsupportedModelError, family_of, final_norm, resolve_site

N_LAYERS, HIDDEN, INNER, VOCAB = 2, 16, 24, 64
_IDS = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=0)
_DECODER = dict(_IDS, hidden_size=HIDDEN, intermediate_size=INNER, num_hidden_layers=N_LAYERS,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
_GPT = dict(_IDS, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=4, n_positions=64)


def _gated(x, mlp):
    return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)


def _phi3(x, mlp):
    gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
    return up * mlp.activation_fn(gate)


def _gemma3(cls):
    """Gemma 3 with a one-layer vision tower, so the text layers sit at model.language_model."""
    text = dict(_DECODER, head_dim=4)
    vision = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2,
                  image_size=16, patch_size=8)
    return cls(tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4))


# family -> (build the model, path of the layer list, FFN module inside a layer whose input x
#            the test hooks, ffn.mid recomputed from x and that module, n_inner)
SPECS = {
    "llama": (lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_DECODER)), "model.layers", "mlp", _gated, INNER),
    "mistral": (lambda: tf.MistralForCausalLM(tf.MistralConfig(**_DECODER)), "model.layers", "mlp", _gated, INNER),
    "qwen2": (lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**_DECODER)), "model.layers", "mlp", _gated, INNER),
    "qwen3": (lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(**_DECODER, head_dim=4)), "model.layers", "mlp", _gated, INNER),
    "gemma": (lambda: tf.GemmaForCausalLM(tf.GemmaConfig(**_DECODER, head_dim=4)), "model.layers", "mlp", _gated, INNER),
    "gemma2": (lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**_DECODER, head_dim=4)), "model.layers", "mlp", _gated, INNER),
    "gemma3": (lambda: _gemma3(tf.Gemma3ForConditionalGeneration), "model.language_model.layers", "mlp", _gated, INNER),
    "gemma3_text": (lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**_DECODER, head_dim=4)), "model.layers", "mlp", _gated, INNER),
    "phi3": (lambda: tf.Phi3ForCausalLM(tf.Phi3Config(**_DECODER)), "model.layers", "mlp", _phi3, INNER),
    # GPT-2 leaves n_inner unset: 4 * n_embd neurons
    "gpt2": (lambda: tf.GPT2LMHeadModel(tf.GPT2Config(**_GPT)), "transformer.h", "mlp",
             lambda x, mlp: mlp.act(mlp.c_fc(x)), 4 * HIDDEN),
    "gptj": (lambda: tf.GPTJForCausalLM(tf.GPTJConfig(**_GPT, n_inner=40, rotary_dim=4)), "transformer.h", "mlp",
             lambda x, mlp: mlp.act(mlp.fc_in(x)), 40),
    "gpt_neox": (lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**_DECODER)), "gpt_neox.layers", "mlp",
                 lambda x, mlp: mlp.act(mlp.dense_h_to_4h(x)), INNER),
    "bert": (lambda: tf.BertForMaskedLM(tf.BertConfig(**_DECODER)), "bert.encoder.layer", "intermediate",
             lambda x, inter: inter.intermediate_act_fn(inter.dense(x)), INNER),
}
GATED = [f for f in FAMILIES if SPECS[f][3] is _gated]


@lru_cache(maxsize=None)
def build(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return SPECS[family][0]().eval()


def _input_ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(2, VOCAB, (2, 5), generator=torch.Generator().manual_seed(seed))


def _ffn_inputs(model, family) -> dict[int, torch.Tensor]:
    """Input of each layer's FFN module, recorded by plain torch hooks (no neuronloc)."""
    _, layers_path, ffn_path, _, _ = SPECS[family]
    seen, handles = {}, []
    for layer, block in enumerate(model.get_submodule(layers_path)):
        hook = lambda module, args, layer=layer: seen.__setitem__(layer, args[0].detach())
        handles.append(block.get_submodule(ffn_path).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(input_ids=_input_ids())
    finally:
        for h in handles:
            h.remove()
    return seen


def _captured(model, site) -> dict[int, torch.Tensor]:
    with torch.no_grad(), capture(model, site, positions="all") as cap:
        model(input_ids=_input_ids())
    return cap.acts


def test_every_family_has_a_tiny_model():
    """The tests below cover every family that sites.py claims to support."""
    assert set(SPECS) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_site_shape(family):
    """resolve_site finds the layer list and the neuron count of each family."""
    model = build(family)
    site = resolve_site(model)
    assert model.config.model_type == family
    assert (site.family, site.name) == (family, "ffn.mid")
    assert site.layers_path == SPECS[family][1]
    assert (site.n_layers, site.n_inner) == (N_LAYERS, SPECS[family][4])
    assert site.n_neurons == N_LAYERS * SPECS[family][4]


@pytest.mark.parametrize("family", FAMILIES)
def test_mid_matches_recomputation(family):
    """ffn.mid equals the FFN's intermediate vector recomputed from its own weights."""
    model = build(family)
    site = resolve_site(model, "ffn.mid")
    inputs, acts = _ffn_inputs(model, family), _captured(model, site)
    _, layers_path, ffn_path, recompute, n_inner = SPECS[family]
    assert sorted(acts) == list(range(N_LAYERS))
    with torch.no_grad():
        for layer, x in inputs.items():
            ffn = model.get_submodule(f"{layers_path}.{layer}.{ffn_path}")
            assert acts[layer].shape == (2, 5, n_inner)
            torch.testing.assert_close(acts[layer], recompute(x, ffn))


@pytest.mark.parametrize("family", GATED + ["phi3"])
def test_up_matches_up_projection(family):
    """ffn.up equals up_proj(x) (for Phi-3: the second half of gate_up_proj(x))."""
    model = build(family)
    site = resolve_site(model, "ffn.up")
    assert site.n_inner == INNER
    inputs, acts = _ffn_inputs(model, family), _captured(model, site)
    layers_path = SPECS[family][1]
    with torch.no_grad():
        for layer, x in inputs.items():
            mlp = model.get_submodule(f"{layers_path}.{layer}.mlp")
            up = mlp.gate_up_proj(x).chunk(2, dim=-1)[1] if family == "phi3" else mlp.up_proj(x)
            torch.testing.assert_close(acts[layer], up)


def test_up_on_gpt2_names_available_sites():
    """GPT-2 has no ffn.up; the error names the sites it does have."""
    with pytest.raises(UnsupportedModelError, match=r"ffn\.up.*gpt2.*available: ffn\.mid"):
        resolve_site(build("gpt2"), "ffn.up")


def test_unknown_family_lists_supported_ones():
    """A model of another family (OPT) is refused with the list of supported families."""
    torch.manual_seed(0)
    opt = tf.OPTForCausalLM(tf.OPTConfig(vocab_size=VOCAB, hidden_size=16, ffn_dim=24, num_hidden_layers=2,
                                         num_attention_heads=4, word_embed_proj_dim=16, max_position_embeddings=64))
    with pytest.raises(UnsupportedModelError, match="'opt'") as err:
        resolve_site(opt)
    assert all(family in str(err.value) for family in FAMILIES)


def test_fake_model_type_is_refused():
    """A config whose model_type is unknown is refused, even if the modules look familiar."""
    model = tf.LlamaForCausalLM(tf.LlamaConfig(**_DECODER))
    model.config.model_type = "not-a-family"
    with pytest.raises(UnsupportedModelError, match="'not-a-family'.*llama.*gpt2"):
        resolve_site(model)


def test_flat_ids_round_trip():
    """flat id = layer * n_inner + index, and unflat inverts it."""
    site = resolve_site(build("llama"))
    assert site.flat(1, 5) == INNER + 5
    assert [site.unflat(site.flat(l, i)) for l in range(N_LAYERS) for i in (0, INNER - 1)] == [
        (0, 0), (0, INNER - 1), (1, 0), (1, INNER - 1)]


def test_layer_out_of_range():
    """Asking for a layer the model does not have is an IndexError naming the layer count."""
    with pytest.raises(IndexError, match="2 layers"):
        resolve_site(build("llama")).module(build("llama"), N_LAYERS)


# ---------------------------------------------------------------- every site

# family -> {site: (module path inside a layer ("" = the layer), kind, units = second half?)},
# read off the transformers sources; embed is model.get_input_embeddings()'s output.
_GATED_WHERE = {"ffn.mid": ("mlp.down_proj", "input"), "ffn.up": ("mlp.up_proj", "output"),
                "resid.pre": ("", "input"), "resid.mid": ("post_attention_layernorm", "input"),
                "attn.out": ("self_attn", "output"), "mlp.out": ("mlp", "output"),
                "attn.head": ("self_attn.o_proj", "input")}
_SANDWICH_WHERE = {**_GATED_WHERE, "resid.mid": ("pre_feedforward_layernorm", "input"),
                   "attn.out": ("post_attention_layernorm", "output"), "mlp.out": ("post_feedforward_layernorm", "output")}
WHERE = {
    **{f: _GATED_WHERE for f in ("llama", "mistral", "qwen2", "qwen3", "gemma")},
    **{f: _SANDWICH_WHERE for f in ("gemma2", "gemma3", "gemma3_text")},
    "phi3": {**_GATED_WHERE, "ffn.up": ("mlp.gate_up_proj", "output", "second")},
    "gpt2": {"ffn.mid": ("mlp.c_proj", "input"), "resid.pre": ("", "input"), "resid.mid": ("ln_2", "input"),
             "attn.out": ("attn", "output"), "mlp.out": ("mlp", "output"), "attn.head": ("attn.c_proj", "input")},
    "gptj": {"ffn.mid": ("mlp.fc_out", "input"), "resid.pre": ("", "input"), "attn.out": ("attn", "output"),
             "mlp.out": ("mlp", "output"), "attn.head": ("attn.out_proj", "input")},
    "gpt_neox": {"ffn.mid": ("mlp.dense_4h_to_h", "input"), "resid.pre": ("", "input"),
                 "attn.out": ("attention", "output"), "mlp.out": ("mlp", "output"),
                 "attn.head": ("attention.dense", "input")},
    "bert": {"ffn.mid": ("intermediate", "output"), "resid.pre": ("", "input"),
             "attn.out": ("attention.output.dense", "output"), "mlp.out": ("output.dense", "output"),
             "attn.head": ("attention.output.dense", "input")},
}
CASES = [(f, s) for f in FAMILIES for s in (*WHERE[f], "embed")]


def _module(model, family, site, layer):
    if site == "embed":
        return model.get_input_embeddings()
    return model.get_submodule(".".join(p for p in (SPECS[family][1], str(layer), WHERE[family][site][0]) if p))


@contextmanager
def plain_hooks(model, family, site, fn, layers=range(N_LAYERS)):
    """fn(layer, units) -> replacement or None, on the expected module by plain torch hooks
    (no neuronloc); units = the module's input or (first) output, or its second half."""
    kind = "output" if site == "embed" else WHERE[family][site][1]
    second = site != "embed" and WHERE[family][site][2:] == ("second",)

    def call(layer, t):
        if not second:
            return fn(layer, t)
        half = t.shape[-1] // 2
        new = fn(layer, t[..., half:])
        return None if new is None else torch.cat([t[..., :half], new], dim=-1)

    def pre(layer):
        def hook(module, args, kwargs):
            new = call(layer, args[0] if args else kwargs["hidden_states"])
            if new is None:
                return None
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})
        return hook

    def post(layer):
        def hook(module, args, out):
            new = call(layer, out[0] if isinstance(out, tuple) else out)
            return None if new is None else ((new, *out[1:]) if isinstance(out, tuple) else new)
        return hook

    handles = []
    try:
        for layer in layers:
            m = _module(model, family, site, layer)
            handles.append(m.register_forward_pre_hook(pre(layer), with_kwargs=True) if kind == "input"
                           else m.register_forward_hook(post(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


def _seen(model, family, site) -> dict[int, torch.Tensor]:
    seen = {}
    with torch.no_grad(), plain_hooks(model, family, site, lambda l, t: seen.__setitem__(l, t.clone()),
                                      range(1 if site == "embed" else N_LAYERS)):
        model(input_ids=_input_ids())
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_has_the_expected_sites(family):
    """The sites of each family (no more, no fewer), their sizes and the head geometry."""
    model = build(family)
    cfg = model.config.get_text_config()
    assert set(family_of(model).sites) == set(WHERE[family])
    for name in (*WHERE[family], "embed"):
        site = resolve_site(model, name)
        width = {"ffn.mid": SPECS[family][4], "ffn.up": INNER, "attn.head": cfg.num_attention_heads * 4}.get(name, HIDDEN)
        assert (site.name, site.n_layers, site.n_inner) == (name, 1 if name == "embed" else N_LAYERS, width)
    heads = resolve_site(model, "attn.head")
    assert (heads.n_heads, heads.head_dim) == (cfg.num_attention_heads, 4)
    assert heads.head(1) == range(4, 8)
    with pytest.raises(IndexError, match="head 4 out of range"):
        heads.head(4)
    with pytest.raises(ValueError, match="no heads: use site 'attn.head'"):
        resolve_site(model, "attn.out").head(0)
    with pytest.raises(UnsupportedModelError, match=f"'nope' is not defined for '{family}'"):
        resolve_site(model, "nope")


@pytest.mark.parametrize("family, name", CASES)
def test_capture_equals_plain_hook(family, name):
    """capture on every site of every family sees what a plain hook on the module sees."""
    model = build(family)
    acts = _captured(model, resolve_site(model, name))
    expected = _seen(model, family, name)
    assert sorted(acts) == sorted(expected)
    for layer, t in expected.items():
        assert torch.equal(acts[layer], t)


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_sites_add_up_to_hidden_states(family):
    """resid.pre = the model's hidden_states[l]; embed = hidden_states[0] (GPT-2 adds position
    embeddings); resid.pre[l+1] = resid.pre[l] + attn.out[l] + mlp.out[l]; resid.mid = resid.pre + attn.out."""
    model = build(family)
    with torch.no_grad():
        hidden = model(input_ids=_input_ids(), output_hidden_states=True).hidden_states
    acts = {name: _captured(model, resolve_site(model, name)) for name in (*WHERE[family], "embed")}
    for layer in range(N_LAYERS):
        torch.testing.assert_close(acts["resid.pre"][layer], hidden[layer])
    embed = acts["embed"][0]
    if family == "gpt2":
        embed = embed + model.transformer.wpe(torch.arange(5))
    if family != "bert":  # BERT adds position and type embeddings and a LayerNorm
        torch.testing.assert_close(embed, hidden[0])
        pre, attn, mlp = acts["resid.pre"], acts["attn.out"], acts["mlp.out"]
        torch.testing.assert_close(pre[1], pre[0] + attn[0] + mlp[0])
    if "resid.mid" in acts:
        for layer in range(N_LAYERS):
            torch.testing.assert_close(acts["resid.mid"][layer], acts["resid.pre"][layer] + acts["attn.out"][layer])


@pytest.mark.parametrize("family, name", CASES)
def test_edit_equals_plain_hook_edit(family, name):
    """Setting two units (attn.head: all of head 1) of layer 0 at every position changes the
    output exactly as the same edit made by a plain hook."""
    model = build(family)
    site = resolve_site(model, name)
    units = list(site.head(1)) if name == "attn.head" else [0, 3]

    def edit(layer, t):
        t = t.clone()
        t[..., units] = 0.5
        return t

    with torch.no_grad():
        plain = model(input_ids=_input_ids()).logits
        with intervene(model, site, [Edit(0, units, "set", 0.5)], positions="all"):
            ours = model(input_ids=_input_ids()).logits
        with plain_hooks(model, family, name, edit, layers=[0]):
            theirs = model(input_ids=_input_ids()).logits
    assert not torch.equal(ours, plain)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_zeroing_every_head_zeroes_attn_out(family):
    """All heads set to 0 at attn.head: attn.out is the output projection's bias (0 without one)."""
    model = build(family)
    heads, out = resolve_site(model, "attn.head"), resolve_site(model, "attn.out")
    with torch.no_grad(), intervene(model, heads, [Edit(0, None, "set", 0.0)], positions="all"), \
            capture(model, out, layers=[0], positions="all") as cap:
        model(input_ids=_input_ids())
    bias = getattr(heads.module(model, 0), "bias", None)
    expected = torch.zeros(HIDDEN) if bias is None else bias
    torch.testing.assert_close(cap.acts[0], expected.expand(2, 5, HIDDEN), rtol=0, atol=1e-6)


def test_unsupported_model_lists_the_families():
    """T5 (an encoder-decoder) is refused by family_of with neuronloc's families listed."""
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=24, num_layers=1,
                                                   num_heads=4, decoder_start_token_id=0))
    with pytest.raises(UnsupportedModelError, match=r"unsupported architecture 't5'.*llama.*gpt2.*bert") as err:
        family_of(t5)
    assert all(family in str(err.value) for family in FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_records(family):
    """Shared-prefix attention only where attention is plain softmax over the cache, and the
    final norm (logit lens) is the module right before the LM head."""
    model = build(family)
    shared = {"llama", "mistral", "qwen2", "qwen3", "gemma", "phi3"}
    assert family_of(model).shared_prefix == (family in shared)
    if family == "bert":
        with pytest.raises(UnsupportedModelError, match="no final norm"):
            final_norm(model)
        return
    seen, handles = {}, []
    for key, module in (("head", model.get_output_embeddings()), ("norm", final_norm(model))):
        handles.append(module.register_forward_pre_hook(lambda m, a, key=key: seen.__setitem__(key, a[0])))
    try:
        with torch.no_grad():
            model(input_ids=_input_ids())
            torch.testing.assert_close(final_norm(model)(seen["norm"]), seen["head"], rtol=0, atol=0)
    finally:
        for h in handles:
            h.remove()
