"""Neuron sites per architecture family: shapes, and the captured activations
against a recomputation from the MLP's own weights (tiny random models, 2 layers)."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import transformers as tf

from neuronloc.hooks import capture
from neuronloc.sites import FAMILIES, UnsupportedModelError, resolve_site

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
