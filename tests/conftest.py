"""Shared fixtures: tiny random models built from configs (no downloads) and the
embedded SmolLM2-135M model (installed by `make setup`)."""
from __future__ import annotations

import pytest
import torch

from neuronloc.models import LM, ModelNotFoundError, from_module, load_model


class CharTokenizer:
    """A tiny tokenizer for random models: a space and the character after it form
    one token (so " A" is a single label token), any other character is a token;
    0 = pad, 1 = bos. Enough for prompts, labels and left padding."""

    def __init__(self, vocab_size: int = 128):
        self.vocab_size = vocab_size
        self.pad_token, self.eos_token = "<pad>", "<eos>"
        self.pad_token_id, self.eos_token_id, self.bos_token_id = 0, 0, 1
        self.padding_side = "left"
        self.chat_template = None

    def _ids(self, text: str, add_special_tokens: bool = True) -> list[int]:
        half = (self.vocab_size - 2) // 2
        ids, i = [], 0
        while i < len(text):
            if text[i] == " " and i + 1 < len(text):
                ids.append(2 + half + ord(text[i + 1]) % half)
                i += 2
            else:
                ids.append(2 + ord(text[i]) % half)
                i += 1
        return ([self.bos_token_id] if add_special_tokens else []) + ids

    def __call__(self, texts, add_special_tokens=True, return_tensors=None, padding=False):
        single = isinstance(texts, str)
        rows = [self._ids(t, add_special_tokens) for t in ([texts] if single else texts)]
        if return_tensors is None:
            return {"input_ids": rows[0] if single else rows}
        width = max(map(len, rows))
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def encode(self, text, add_special_tokens=True):
        return self._ids(text, add_special_tokens)

    def decode(self, ids):
        half = (self.vocab_size - 2) // 2
        return "".join("" if i < 2 else chr(i - 2) if i < 2 + half else " " + chr(i - 2 - half) for i in ids)


def tiny_llama(seed: int = 0, **overrides) -> LM:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
               attn_implementation="eager")
    cfg.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).float()
    return from_module(model, CharTokenizer(cfg["vocab_size"]), name="tiny-llama")


@pytest.fixture(scope="session")
def tiny() -> LM:
    return tiny_llama()


@pytest.fixture(scope="session")
def smol() -> LM:
    """The embedded SmolLM2-135M-Instruct model (real weights)."""
    try:
        return load_model("smollm2-135m")
    except ModelNotFoundError as err:
        pytest.fail(f"embedded model missing ({err}); run `make setup`")


def prob_under_hooks(lm: LM, fact, handles: list) -> float:
    """P(fact.target) at the last position of fact.prompt with the given hook handles
    registered (a hand-written reference for the library's edits); removes them."""
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=fact.prompt[None]).logits[0, -1]
    finally:
        for h in handles:
            h.remove()
    return float(logits.double().softmax(-1)[fact.target])


def scaled_prob(lm: LM, fact, neurons: dict, factor: float) -> float:
    """P(fact.target) with the neurons {layer: [index]} of the down-projection input scaled
    by `factor` at the last position, by plain torch hooks (`prob_under_hooks`)."""
    handles = []
    for layer, idx in neurons.items():
        def pre(mod, args, idx=idx):
            x = args[0].clone()
            x[:, -1, idx] = x[:, -1, idx] * factor
            return (x,)
        handles.append(lm.model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(pre))
    return prob_under_hooks(lm, fact, handles)


def float64_twin(lm: LM) -> LM:
    """The same model in float64: the ground truth float32 paths are compared to (their
    differences from each other are float32 rounding of either, not an error of one)."""
    import copy

    return from_module(copy.deepcopy(lm.model).double(), lm.tokenizer, name=f"{lm.name}-float64")


# Tolerance of float32 IG against the float64 run, max |error| / max |truth| over neurons, per
# target. Measured on the tiny models: at most 1e-6 for every target and read-out (prob_margin
# under pmi, 9.9e-7); 10x headroom. The embedded model has a 49k vocabulary, so the
# vocabulary-softmax targets (answer_prob, prob_margin) carry more rounding: see
# test_attribution.test_ig_paths_against_float64_on_embedded_model.
IG_TOLERANCE = {"option_prob": 1e-5, "answer_prob": 1e-5, "prob_margin": 1e-5, "answer_logprob": 1e-5}


def rel_err(x: torch.Tensor, truth: torch.Tensor) -> float:
    """max |x - truth| / max |truth| over the entries truth defines (NaN = layer not scored)."""
    keep = ~torch.isnan(truth)
    return ((x.double()[keep] - truth.double()[keep]).abs().max() / truth.double()[keep].abs().max()).item()
