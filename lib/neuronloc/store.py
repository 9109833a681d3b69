"""On-disk cache of scores and results: results/<model-slug>/cache/<key>.pt.

A key is the sha256 of a canonical JSON of everything that decides a result:
    key(model=lm, site=site.name, task=questions, method="ig", params={...})
Parts may be plain JSON values, tensors / arrays (hashed by value), dataclasses
(MCQuestion, Task, Site: by their fields), an `LM` or `nn.Module` (name + a hash of
the config and of every weight), paths and functions (by name). The package
version is always added, as the code version; pass a `version=` part to invalidate
one method's entries when its code changes.

A file is b"NLC2" + sha256(key + payload) + key + payload, payload = torch.save(obj),
key = the 64 hex characters it is stored under. Writes go to a temp file in the same
folder and are renamed into place (atomic), with the user's umask for its mode. A file
whose checksum does not match (truncated, flipped bytes, an older format) or that holds
another key's result (a file copied over another) is a miss: a warning is logged and
the result recomputed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import tempfile
import weakref
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

log = logging.getLogger(__name__)

MAGIC = b"NLC2"
_KEY = 64  # hex sha256
_HEADER = len(MAGIC) + 32 + _KEY  # magic + raw sha256 digest + the key


# ---------------------------------------------------------------- keys

def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (any device, any dtype)."""
    t = t.detach()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.device.type != "meta":
        h.update(t.reshape(-1).contiguous().view(torch.uint8).cpu().numpy())
    return h.hexdigest()


_FINGERPRINTS: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


# where a model was loaded from, not what it is: the same weights from a GGUF or from its load cache must match
_LOCATION_FIELDS = ("_name_or_path", "quantization_config", "transformers_version")


def _config_json(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if config is None:
        return type(model).__name__
    fields = {k: v for k, v in config.to_dict().items() if k not in _LOCATION_FIELDS}
    return json.dumps(fields, sort_keys=True, default=str)


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's config and every parameter and buffer (name, dtype, shape,
    bytes). Memoised until a weight is modified in place or replaced (tensor version
    counters and storage pointers), so fine-tuned weights get a new fingerprint."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    state = tuple((t.data_ptr(), t._version) for _, t in tensors)
    hit = _FINGERPRINTS.get(model)
    if hit is not None and hit[0] == state:
        return hit[1]
    h = hashlib.sha256(_config_json(model).encode())
    with ThreadPoolExecutor() as pool:  # hashlib releases the GIL: one thread per tensor
        for name, digest in zip([n for n, _ in tensors], pool.map(tensor_digest, [t for _, t in tensors])):
            h.update(f"{name}:{digest};".encode())
    _FINGERPRINTS[model] = (state, h.hexdigest())
    return h.hexdigest()


def canonical(x: Any) -> Any:
    """A JSON-able form of `x` that is equal exactly when the results it decides are."""
    from .models import LM

    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else repr(x)
    if isinstance(x, dict):
        return {str(k): canonical(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [canonical(v) for v in x]
    if isinstance(x, (set, frozenset)):
        return sorted((canonical(v) for v in x), key=lambda v: json.dumps(v, sort_keys=True))
    if torch.is_tensor(x):
        return {"tensor": tensor_digest(x)}
    if isinstance(x, np.ndarray):
        return {"tensor": tensor_digest(torch.from_numpy(np.ascontiguousarray(x)))}
    if isinstance(x, np.generic):
        return canonical(x.item())
    if isinstance(x, LM):
        return {"model": x.name, "weights": model_fingerprint(x.model)}
    if isinstance(x, nn.Module):
        return {"weights": model_fingerprint(x)}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        fields = {f.name: canonical(getattr(x, f.name)) for f in dataclasses.fields(x)}
        return {"type": type(x).__name__, **fields}
    if isinstance(x, Enum):
        return canonical(x.value)
    if isinstance(x, (Path, torch.dtype, torch.device)):
        return str(x)
    if callable(x) and hasattr(x, "__qualname__"):
        return f"{x.__module__}.{x.__qualname__}"
    raise TypeError(f"cannot key a {type(x).__name__}: pass plain values, tensors, dataclasses or an LM")


def key(**parts) -> str:
    """sha256 (hex) of the canonical JSON of `parts` plus the neuronloc version."""
    import neuronloc

    doc = canonical({**parts, "__neuronloc__": neuronloc.__version__})
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- files

def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give: 0o666 less the user's umask
    (tempfile.mkstemp makes 0600 files, which other users of a shared results folder cannot read)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None] | bytes | str) -> Path:
    """Write a file atomically: `write(f)` (or the given bytes / text) into a temp file in
    the same folder, fsync, chmod to the umask's mode, os.replace. A crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write.encode() if isinstance(write, str) else write)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- store

class _HashingWriter:
    """File-like that hashes what torch.save writes through it."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, b) -> int:
        self.sha.update(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


class Store:
    """A folder of results keyed by `key(...)`: tensors, dicts of tensors, JSON-able data."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @classmethod
    def for_model(cls, results_root: str | os.PathLike, slug: str) -> "Store":
        """The cache of one model: results/<slug>/cache/."""
        return cls(Path(results_root) / slug / "cache")

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def get(self, key: str, default=None):
        """The stored object, or `default` on a miss (absent, corrupt, or another key's file)."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return default
        digest, body = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:]
        if data[:len(MAGIC)] != MAGIC or hashlib.sha256(body).digest() != digest:
            log.warning("cache file %s is corrupt or of an older format (checksum mismatch): deleting it, the result will be recomputed", path)
            path.unlink(missing_ok=True)
            return default
        stored = body[:_KEY].decode("ascii", "replace")
        if stored != key:
            log.warning("cache file %s holds the result of another key (%s...; copied or renamed?): "
                        "ignoring it, the result will be recomputed", path, stored[:12])
            return default
        return torch.load(io.BytesIO(data[_HEADER:]), map_location="cpu", weights_only=False)  # our own checksummed files

    def put(self, key: str, obj) -> Path:
        """Write `obj` atomically (temp file in the same folder, then os.replace)."""
        if len(key) != _KEY:
            raise ValueError(f"a cache key is 64 hex characters (store.key(...)), got {key!r}")

        def write(f):
            f.write(MAGIC + bytes(32))
            writer = _HashingWriter(f)
            writer.write(key.encode("ascii"))
            torch.save(obj, writer)
            f.seek(len(MAGIC))
            f.write(writer.sha.digest())

        return write_atomic(self.path(key), write)

    def cached(self, key: str, fn: Callable[[], Any]):
        """`get(key)`, or on a miss `fn()` stored under `key` and returned."""
        miss = object()
        obj = self.get(key, miss)
        if obj is miss:
            obj = fn()
            self.put(key, obj)
        return obj
