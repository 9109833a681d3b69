"""Where the FFN neurons live, per architecture family.

A *neuron* is one coordinate of the FFN intermediate vector at one token
position, identified by (layer, index); flat id = layer * n_inner + index.

Sites:
  ffn.mid  the input of the FFN output projection (default):
           LLaMA/Mistral/Qwen/Gemma/Phi-3: act(gate) * up entering mlp.down_proj;
           GPT-2: mlp.c_proj input; GPT-J: mlp.fc_out input;
           GPT-NeoX: mlp.dense_4h_to_h input; BERT: intermediate output.
  ffn.up   the output of mlp.up_proj (gated families only; what the NEG reference
           code hooks on LLaMA). For Phi-3's fused gate_up_proj, the "up" half.

Each site names a module and whether the neuron vector is that module's input
(`kind="input"`, seen by a forward pre-hook) or output (`kind="output"`), plus an
optional slice of the last dimension. hooks.py is the only user of these fields.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

SITES = ("ffn.mid", "ffn.up")

# family -> (candidate paths of the layer list, {site: (module path inside a layer, kind, slice_kind)})
_GATED = {"ffn.mid": ("mlp.down_proj", "input", None), "ffn.up": ("mlp.up_proj", "output", None)}
_DECODER_LAYERS = ("model.layers", "model.language_model.layers", "language_model.model.layers", "layers")
_FAMILIES: dict[str, tuple[tuple[str, ...], dict]] = {
    "llama": (_DECODER_LAYERS, _GATED),
    "mistral": (_DECODER_LAYERS, _GATED),
    "qwen2": (_DECODER_LAYERS, _GATED),
    "qwen3": (_DECODER_LAYERS, _GATED),
    "gemma": (_DECODER_LAYERS, _GATED),
    "gemma2": (_DECODER_LAYERS, _GATED),
    "gemma3": (_DECODER_LAYERS, _GATED),
    "gemma3_text": (_DECODER_LAYERS, _GATED),
    "phi3": (_DECODER_LAYERS, {"ffn.mid": ("mlp.down_proj", "input", None),
                               "ffn.up": ("mlp.gate_up_proj", "output", "second_half")}),
    "gpt2": (("transformer.h", "h"), {"ffn.mid": ("mlp.c_proj", "input", None)}),
    "gptj": (("transformer.h", "h"), {"ffn.mid": ("mlp.fc_out", "input", None)}),
    "gpt_neox": (("gpt_neox.layers", "layers"), {"ffn.mid": ("mlp.dense_4h_to_h", "input", None)}),
    "bert": (("bert.encoder.layer", "encoder.layer"), {"ffn.mid": ("intermediate", "output", None)}),
}
FAMILIES = tuple(_FAMILIES)


class UnsupportedModelError(ValueError):
    """The model's architecture has no neuron-site adapter."""


@dataclass(frozen=True)
class Site:
    """Neuron site of one model: `n_layers` x `n_inner` neurons.

    module_path: path inside one layer (e.g. "mlp.down_proj").
    kind: "input" (neurons = module input) or "output" (neurons = module output).
    start/stop: the slice of the module's last dimension that holds the neurons.
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

    @property
    def n_neurons(self) -> int:
        return self.n_layers * self.n_inner

    def module(self, model: nn.Module, layer: int) -> nn.Module:
        if not 0 <= layer < self.n_layers:
            raise IndexError(f"layer {layer} out of range: the model has {self.n_layers} layers")
        return model.get_submodule(f"{self.layers_path}.{layer}.{self.module_path}")

    def flat(self, layer: int, index: int) -> int:
        return layer * self.n_inner + index

    def unflat(self, flat_id: int) -> tuple[int, int]:
        return divmod(int(flat_id), self.n_inner)


def _config(model) -> object:
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def resolve_site(model: nn.Module, site: str = "ffn.mid") -> Site:
    """The `Site` named `site` for this model (by `config.model_type`)."""
    family = model.config.model_type
    if family not in _FAMILIES:
        raise UnsupportedModelError(
            f"unsupported architecture {family!r}: neuronloc knows the FFN neurons of "
            f"{', '.join(FAMILIES)}. Add an adapter to neuronloc/sites.py for a new family."
        )
    paths, sites = _FAMILIES[family]
    if site not in sites:
        raise UnsupportedModelError(
            f"site {site!r} is not defined for {family!r}; available: {', '.join(sites)}"
        )
    module_path, kind, slice_kind = sites[site]
    for path in paths:
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            break
    else:
        raise UnsupportedModelError(f"could not find the layer list of this {family!r} model (tried {', '.join(paths)})")
    cfg = _config(model)
    width = _width(layers[0].get_submodule(module_path), kind)
    start, stop, n_inner = 0, None, width
    if slice_kind == "second_half":
        n_inner = width // 2
        start, stop = n_inner, width
    expected = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or None
    if family == "gpt2" and expected is None:
        expected = 4 * cfg.n_embd
    if expected is not None and expected != n_inner:
        raise UnsupportedModelError(f"{family!r}: found {n_inner} neurons per layer at {module_path}, config says {expected}")
    return Site(site, family, path, module_path, kind, len(layers), n_inner, start, stop)


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
