"""Load cache: what transformers derives from a GGUF file, kept on disk so it is derived once.

Loading a GGUF parses it three times (config, tokenizer, weights) and de-quantises every
tensor: ~20 s for the embedded SmolLM2-135M on 2 idle CPU cores. The first load stores
the result as a model folder (config.json without the GGUF quantization entry, the
tokenizer files, model.safetensors with the de-quantised weights in the load dtype);
later loads read that folder back with `from_pretrained`, bit-identical, in about a second.

Where: $NEURONLOC_CACHE, else $XDG_CACHE_HOME/neuronloc, else ~/.cache/neuronloc.
  gguf/<sha256 of the GGUF>-<dtype>/   one entry (e.g. ...-float32)
  sha256/<hash of path, size, mtime>   the GGUF's sha256, so a file is hashed once
An entry is written into a temp folder and renamed into place, its manifest
(neuronloc.json: every file and its size, the transformers version) written last, so a crash or a concurrent
writer never leaves a torn entry (the first rename wins, the other copy is dropped).
An entry whose manifest is missing or whose files differ from it is corrupt, one made
by another transformers version is stale: a warning is logged and it is rebuilt. A bit
flip inside the weights is not detected (hashing them would double the load time):
delete the folder to rebuild it.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from .store import file_mode, write_atomic

log = logging.getLogger(__name__)

MANIFEST = "neuronloc.json"


def cache_root() -> Path:
    """$NEURONLOC_CACHE, else $XDG_CACHE_HOME/neuronloc, else ~/.cache/neuronloc."""
    if os.environ.get("NEURONLOC_CACHE"):
        return Path(os.environ["NEURONLOC_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "neuronloc"


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file, remembered by (path, size, mtime) so an unchanged file is hashed once."""
    st = path.stat()
    ident = hashlib.sha256(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    memo = cache_root() / "sha256" / ident
    with contextlib.suppress(OSError):
        known = memo.read_text().strip()
        if len(known) == 64:
            return known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    with contextlib.suppress(OSError):  # a read-only cache only costs the hash next time
        write_atomic(memo, h.hexdigest())
    return h.hexdigest()


def entry(digest: str, dtype: torch.dtype) -> Path:
    return cache_root() / "gguf" / f"{digest}-{str(dtype).removeprefix('torch.')}"


def _fault(folder: Path) -> str | None:
    """Why an entry cannot be used (None: every file the manifest lists is there with its size,
    and the transformers that de-quantised it is the one running: a new one may convert differently)."""
    import transformers

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["transformers"] != transformers.__version__:
            return f"made by transformers {manifest['transformers']}, this is {transformers.__version__}"
        if not manifest["files"] or any((folder / name).stat().st_size != size for name, size in manifest["files"].items()):
            return "a file has the wrong size"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"a file is missing or unreadable: {type(err).__name__}"
    return None


def load(digest: str, dtype: torch.dtype, read: Callable[[Path], tuple]):
    """read(entry folder) -> (model, tokenizer) when a sound entry exists, else None (a faulty one is removed)."""
    folder = entry(digest, dtype)
    if not folder.is_dir():
        return None
    reason = _fault(folder)
    if reason is None:
        try:
            return read(folder)
        except (OSError, ValueError, RuntimeError) as err:
            reason = f"{type(err).__name__}: {str(err)[:200]}"
    log.warning("model load cache %s is corrupt or stale (%s): rebuilding it from the GGUF file", folder, reason)
    _remove(folder)
    return None


def save(digest: str, dtype: torch.dtype, model, tokenizer) -> None:
    """Store (model, tokenizer) as the entry for (digest, dtype), atomically. A failure
    (disk full, read-only cache) is a warning: the model is loaded all the same."""
    folder = entry(digest, dtype)
    _remove_stale(folder.parent)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    except OSError as err:
        log.warning("cannot write the model load cache under %s (%s): the next load parses the GGUF again", folder.parent, err)
        return
    try:
        _save_model(model, tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir()}
        import transformers

        manifest = {"gguf_sha256": digest, "dtype": str(dtype), "transformers": transformers.__version__, "files": files}
        write_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1))
        for p in tmp.iterdir():
            _sync(p)
            os.chmod(p, file_mode())
        os.chmod(tmp, file_mode() | 0o111)  # mkdtemp makes 0700 folders: follow the umask
        os.rename(tmp, folder)  # fails when another process got there first: keep theirs
    except Exception as err:  # noqa: BLE001 - the cache is an optimisation: never fail a load over it
        if not folder.is_dir():
            log.warning("cannot write the model load cache %s (%s): the next load parses the GGUF again", folder, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_model(model, folder: Path) -> None:
    """config.json and model.safetensors that `from_pretrained(folder)` loads as a plain model.
    (`save_pretrained` refuses a GGUF-loaded model: transformers marks it quantised, though its
    weights are de-quantised floats.)"""
    from safetensors.torch import save_file

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # else from_pretrained would look for the GGUF file
    config.save_pretrained(folder)
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() not in seen:  # a tied weight (lm_head = embed_tokens) is stored once; from_pretrained ties it again
            seen.add(t.data_ptr())
            tensors[name] = t.detach().contiguous().cpu()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _sync(path: Path) -> None:
    """Data on disk before the rename publishes it (else a power cut could leave a renamed, empty file)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _remove_stale(parent: Path, age: float = 3600.0) -> None:
    """Temp and trash folders (hundreds of MB each) that a killed writer left behind."""
    for stale in [*parent.glob(".*.tmp"), *parent.glob(".*.trash")]:
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > age:
                shutil.rmtree(stale, ignore_errors=True)


def _remove(folder: Path) -> None:
    """Take a folder out of the way atomically (rename), then delete it."""
    trash = folder.with_name(f".{folder.name}.{os.getpid()}.trash")
    with contextlib.suppress(OSError):
        os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def gguf_progress_follows_transformers():
    """transformers' GGUF de-quantisation bar ignores `transformers.logging.disable_progress_bar()`:
    make it follow that setting (notebooks disable it so that cold and warm loads print the same)."""
    from functools import partial

    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = partial(bar, disable=not hf_logging.is_progress_bar_enabled())
    try:
        yield
    finally:
        gguf_utils.tqdm = bar
