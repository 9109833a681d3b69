"""Where the units live, per architecture family: one `Family` record each.

A *neuron* (unit) is one coordinate of a site's vector at one token position,
identified by (layer, index); flat id = layer * n_inner + index. Every site is a
tensor `[batch, pos, n_inner]` at each layer:

  ffn.mid    the input of the FFN output projection (default): LLaMA/Mistral/Qwen/
             Gemma/Phi-3 act(gate) * up entering mlp.down_proj; GPT-2 mlp.c_proj input;
             GPT-J mlp.fc_out input; GPT-NeoX mlp.dense_4h_to_h input; BERT intermediate output.
  ffn.up     the output of mlp.up_proj (gated families; what the NEG reference code hooks
             on LLaMA). For Phi-3's fused gate_up_proj, the "up" half.
  resid.pre  the layer's input hidden states, d_model.
  resid.mid  the residual stream entering the FFN (after the attention add), d_model (LPI
             reads it): not GPT-J/GPT-NeoX (parallel attention and FFN) or BERT (post-norm).
             Gemma 2/3: the input of pre_feedforward_layernorm; their FFN output passes
             `Family.post_ffn_norm` before it is added (post_attention_layernorm norms the
             attention output there, so it is not the residual stream).
  attn.out   what the attention block adds to the residual stream, d_model (Gemma 2/3: after
             post_attention_layernorm; BERT: attention.output.dense, before add + LayerNorm).
  mlp.out    what the FFN adds to the residual stream, d_model (same conventions).
  attn.head  the input of the attention output projection, n_heads * head_dim; head h is
             units `site.head(h)` (knowledge circuits ablate or patch one head).
  embed      the token-embedding output, d_model; one "layer" (0). GPT-2 adds position
             embeddings and BERT its LayerNorm after it.

Nothing outside this file names a model's modules: hooks.py reads `Site`, and
restricted fine-tuning, the logit lens and the shared-prefix attention read `Family`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn

from .neurons import flat, unflat


class UnsupportedModelError(ValueError):
    """The model's architecture has no `Family` record (or lacks the asked-for site)."""


class Where(NamedTuple):
    """A site inside one layer: module path ("" = the layer itself), whether the units are
    its "input" or "output", and "second" where they are the second half of the last dim."""

    path: str
    kind: str
    half: str | None = None


@dataclass(frozen=True)
class Family:
    """Everything neuronloc knows about one architecture.

    layers: candidate paths of the layer list. sites: {site name: Where} (embed is found
    by `get_input_embeddings`). neuron_params: the FFN parameters of unit i, as
    (path inside a layer, dim holding the unit index, offset in units of n_inner): "in"
    projections own row i (+ bias i), "out" projections column i (GPT-2's Conv1D is
    [in, out], hence swapped dims). final_norm: path from the layer list's parent (logit
    lens). shared_prefix: rows may attend to one cached prefix (`prefix_attention`).
    post_ffn_norm: path inside a layer of the norm the FFN output passes before the residual
    add (Gemma 2/3's post_feedforward_layernorm), None where it is added as is.
    """

    name: str
    layers: tuple[str, ...]
    sites: dict[str, Where]
    neuron_params: tuple[tuple[str, int, int], ...]
    final_norm: str | None
    shared_prefix: bool = False
    post_ffn_norm: str | None = None


_DECODER_LAYERS = ("model.layers", "model.language_model.layers", "language_model.model.layers", "layers")
_GATED_SITES = {
    "ffn.mid": Where("mlp.down_proj", "input"), "ffn.up": Where("mlp.up_proj", "output"),
    "resid.pre": Where("", "input"), "resid.mid": Where("post_attention_layernorm", "input"),
    "attn.out": Where("self_attn", "output"), "mlp.out": Where("mlp", "output"),
    "attn.head": Where("self_attn.o_proj", "input"),
}
# Gemma 2/3 norm each block's output before the residual add ("sandwich" norms)
_SANDWICH_SITES = {**_GATED_SITES, "resid.mid": Where("pre_feedforward_layernorm", "input"),
                   "attn.out": Where("post_attention_layernorm", "output"),
                   "mlp.out": Where("post_feedforward_layernorm", "output")}
_GATED_PARAMS = (("mlp.gate_proj.weight", 0, 0), ("mlp.gate_proj.bias", 0, 0),
                 ("mlp.up_proj.weight", 0, 0), ("mlp.up_proj.bias", 0, 0), ("mlp.down_proj.weight", 1, 0))


def _gated(name: str, sites=_GATED_SITES, shared_prefix: bool = True, post_ffn_norm: str | None = None) -> Family:
    return Family(name, _DECODER_LAYERS, sites, _GATED_PARAMS, "norm", shared_prefix, post_ffn_norm)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    _gated("llama"), _gated("mistral"), _gated("qwen2"), _gated("qwen3"), _gated("gemma"),
    # soft-capping and sliding windows: no shared-prefix attention
    *(_gated(name, _SANDWICH_SITES, False, "post_feedforward_layernorm") for name in ("gemma2", "gemma3", "gemma3_text")),
    Family("phi3", _DECODER_LAYERS, {**_GATED_SITES, "ffn.up": Where("mlp.gate_up_proj", "output", "second")},
           (("mlp.gate_up_proj.weight", 0, 0), ("mlp.gate_up_proj.weight", 0, 1), ("mlp.down_proj.weight", 1, 0)),
           "norm", True),
    Family("gpt2", ("transformer.h", "h"),
           {"ffn.mid": Where("mlp.c_proj", "input"), "resid.pre": Where("", "input"),
            "resid.mid": Where("ln_2", "input"), "attn.out": Where("attn", "output"),
            "mlp.out": Where("mlp", "output"), "attn.head": Where("attn.c_proj", "input")},
           (("mlp.c_fc.weight", 1, 0), ("mlp.c_fc.bias", 0, 0), ("mlp.c_proj.weight", 0, 0)), "ln_f"),
    Family("gptj", ("transformer.h", "h"),
           {"ffn.mid": Where("mlp.fc_out", "input"), "resid.pre": Where("", "input"),
            "attn.out": Where("attn", "output"), "mlp.out": Where("mlp", "output"),
            "attn.head": Where("attn.out_proj", "input")},
           (("mlp.fc_in.weight", 0, 0), ("mlp.fc_in.bias", 0, 0), ("mlp.fc_out.weight", 1, 0)), "ln_f"),
    Family("gpt_neox", ("gpt_neox.layers", "layers"),
           {"ffn.mid": Where("mlp.dense_4h_to_h", "input"), "resid.pre": Where("", "input"),
            "attn.out": Where("attention", "output"), "mlp.out": Where("mlp", "output"),
            "attn.head": Where("attention.dense", "input")},
           (("mlp.dense_h_to_4h.weight", 0, 0), ("mlp.dense_h_to_4h.bias", 0, 0), ("mlp.dense_4h_to_h.weight", 1, 0)),
           "final_layer_norm"),
    Family("bert", ("bert.encoder.layer", "encoder.layer"),
           {"ffn.mid": Where("intermediate", "output"), "resid.pre": Where("", "input"),
            "attn.out": Where("attention.output.dense", "output"), "mlp.out": Where("output.dense", "output"),
            "attn.head": Where("attention.output.dense", "input")},
           (("intermediate.dense.weight", 0, 0), ("intermediate.dense.bias", 0, 0), ("output.dense.weight", 1, 0)),
           None),
)}
_D_MODEL = ("resid.pre", "resid.mid", "attn.out", "mlp.out", "embed")  # sites one residual vector wide


@dataclass(frozen=True)
class Site:
    """One site of one model: `n_layers` x `n_inner` units.

    layers_path: the layer list ("" for embed, which lies outside it: module_path is then
    the full path). module_path: path inside one layer ("" = the layer itself).
    kind: "input" (units = the module's input) or "output" (its output, or the first
    element of a tuple output). start/stop: the slice of the last dimension holding the
    units. n_heads: attention heads (attn.head only; head h = units `head(h)`).
    """

    name: str
    family: str
    layers_path: str
    module_path: str
    kind: str
    n_layers: int
    n_inner: int
    start: int = 0
    stop: int | None = None
    n_heads: int | None = None

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.n_inner

    @property
    def shape(self) -> tuple[int, int]:
        """(n_layers, n_inner): the shape of a score tensor or neuron mask of this site."""
        return self.n_layers, self.n_inner

    @property
    def head_dim(self) -> int:
        if self.n_heads is None:
            raise ValueError(f"site {self.name!r} has no heads: use site 'attn.head'")
        return self.n_inner // self.n_heads

    def head(self, h: int) -> range:
        """The unit indices of attention head h (an Edit's `neurons`, or a slice's bounds)."""
        size = self.head_dim
        if not 0 <= h < self.n_heads:
            raise IndexError(f"head {h} out of range: site {self.name!r} has {self.n_heads} heads")
        return range(h * size, (h + 1) * size)

    def module(self, model: nn.Module, layer: int) -> nn.Module:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range: the model has {self.n_layers} layers")
        if not self.layers_path:
            return model.get_submodule(self.module_path)
        return model.get_submodule(".".join(p for p in (self.layers_path, str(layer), self.module_path) if p))

    def flat(self, layer: int, index: int) -> int:
        return flat(layer, index, self.n_inner)

    def unflat(self, flat_id: int) -> tuple[int, int]:
        return unflat(flat_id, self.n_inner)


def text_config(model) -> object:
    """The config of the language model (a multimodal config's text part)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def family_of(model: nn.Module) -> Family:
    """The `Family` of this model (by `config.model_type`)."""
    name = model.config.model_type
    if name not in FAMILIES:
        raise UnsupportedModelError(
            f"unsupported architecture {name!r}: neuronloc knows the neurons of "
            f"{', '.join(FAMILIES)}. Add a Family record to neuronloc/sites.py for a new family."
        )
    return FAMILIES[name]


def layers_path(model: nn.Module, family: Family | None = None) -> str:
    """Path of the model's (non-empty) layer list."""
    family = family or family_of(model)
    for path in family.layers:
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return path
    raise UnsupportedModelError(f"could not find the layer list of this {family.name!r} model "
                                f"(tried {', '.join(family.layers)})")


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied before the LM head (the logit lens reads `head(final_norm(x))`)."""
    family = family_of(model)
    if family.final_norm is None:
        raise UnsupportedModelError(f"{family.name!r} has no final norm before its head")
    parent = layers_path(model, family).rpartition(".")[0]
    return model.get_submodule(f"{parent}.{family.final_norm}" if parent else family.final_norm)


def logit_lens(model: nn.Module):
    """x `[..., d_model]` (a residual-stream vector) -> the logits the model would give for it:
    head(final_norm(x)), then tanh soft-capping where the config sets
    final_logit_softcapping (Gemma 2; what its forward applies after the head)."""
    norm, head = final_norm(model), model.get_output_embeddings()
    cap = getattr(text_config(model), "final_logit_softcapping", None)

    def lens(x: torch.Tensor) -> torch.Tensor:
        logits = head(norm(x))
        return torch.tanh(logits / cap) * cap if cap else logits
    return lens


def post_ffn_norm(model: nn.Module, layer: int) -> nn.Module | None:
    """The norm layer `layer`'s FFN output passes before the residual add (`Family.post_ffn_norm`),
    None where the output is added as is."""
    family = family_of(model)
    if family.post_ffn_norm is None:
        return None
    return model.get_submodule(f"{layers_path(model, family)}.{layer}.{family.post_ffn_norm}")


def resolve_site(model: nn.Module, site: str = "ffn.mid") -> Site:
    """The `Site` named `site` for this model."""
    family = family_of(model)
    available = (*family.sites, "embed")
    if site not in available:
        raise UnsupportedModelError(f"site {site!r} is not defined for {family.name!r}; available: {', '.join(available)}")
    cfg = text_config(model)
    if site == "embed":
        embed = model.get_input_embeddings()
        path = next(name for name, m in model.named_modules() if m is embed)
        return Site(site, family.name, "", path, "output", 1, cfg.hidden_size)
    path = layers_path(model, family)
    layers = model.get_submodule(path)
    where = family.sites[site]
    if site in _D_MODEL:
        return Site(site, family.name, path, where.path, where.kind, len(layers), cfg.hidden_size)
    width = _width(layers[0].get_submodule(where.path), where.kind)
    if site == "attn.head":
        return Site(site, family.name, path, where.path, where.kind, len(layers), width,
                    n_heads=cfg.num_attention_heads)
    start, stop, n_inner = 0, None, width
    if where.half == "second":
        n_inner = width // 2
        start, stop = n_inner, width
    expected = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or None
    if family.name == "gpt2" and expected is None:
        expected = 4 * cfg.n_embd
    if expected is not None and expected != n_inner:
        raise UnsupportedModelError(f"{family.name!r}: found {n_inner} neurons per layer at {where.path}, config says {expected}")
    return Site(site, family.name, path, where.path, where.kind, len(layers), n_inner, start, stop)


def _width(module: nn.Module, kind: str) -> int:
    """Size of the module's input or output feature dimension."""
    if isinstance(module, nn.Linear):
        return module.in_features if kind == "input" else module.out_features
    weight = getattr(module, "weight", None)
    if weight is not None and weight.ndim == 2:  # GPT-2 Conv1D stores weight as [in, out]
        return weight.shape[0] if kind == "input" else weight.shape[1]
    dense = getattr(module, "dense", None)  # BERT intermediate
    if isinstance(dense, nn.Linear) and kind == "output":
        return dense.out_features
    raise UnsupportedModelError(f"cannot tell the neuron count of {type(module).__name__}")
