"""The GGUF load cache: a second load reads the cache and gives the same model and
tokenizer, bit for bit; a damaged entry is rebuilt; writers never leave a torn entry."""
from __future__ import annotations

import json
import logging
import os
import time

import pytest
import torch

from neuronloc import loadcache
from neuronloc.models import embedded_gguf, load_model
from neuronloc.store import model_fingerprint

pytestmark = pytest.mark.model
STRINGS = ["Hello world!", "Answer: B\n\nQuestion: 2 + 2?", "naïve café 東京 🙂", " A"]


@pytest.fixture(scope="module")
def loads(tmp_path_factory):
    """(cold, warm, seconds of the warm load, cache folder): two loads into a fresh cache."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEURONLOC_CACHE", str(root))
        cold = load_model("smollm2-135m")
        start = time.perf_counter()
        warm = load_model("smollm2-135m")
        seconds = time.perf_counter() - start
    return cold, warm, seconds, root


def test_warm_load_is_identical(loads):
    cold, warm, seconds, root = loads
    (folder,) = (root / "gguf").iterdir()
    assert folder.name == f"{loadcache.file_sha256(embedded_gguf())}-float32"  # what the warm load read
    a, b = cold.model.state_dict(), warm.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert warm.model.lm_head.weight.data_ptr() == warm.model.model.embed_tokens.weight.data_ptr()  # still tied
    assert model_fingerprint(cold.model) == model_fingerprint(warm.model)  # results-cache keys do not move
    for s in STRINGS:
        assert cold.tokenizer(s)["input_ids"] == warm.tokenizer(s)["input_ids"], s
    assert cold.tokenizer.chat_template == warm.tokenizer.chat_template
    assert (cold.tokenizer.bos_token, cold.tokenizer.eos_token, cold.tokenizer.pad_token, len(cold.tokenizer)) == \
           (warm.tokenizer.bos_token, warm.tokenizer.eos_token, warm.tokenizer.pad_token, len(warm.tokenizer))
    assert seconds < 15, f"warm load took {seconds:.1f} s"  # ~1 s idle; generous for a loaded CI machine


@pytest.mark.parametrize("damage", ["truncate", "no manifest", "other transformers"])
def test_damaged_entry_is_rebuilt(loads, monkeypatch, caplog, damage):
    _, warm, _, root = loads
    monkeypatch.setenv("NEURONLOC_CACHE", str(root))
    digest = "d" * 64  # an entry of its own: the warm model's weights may be mapped from the real one
    loadcache.save(digest, torch.float32, warm.model, warm.tokenizer)
    folder = loadcache.entry(digest, torch.float32)
    weights = folder / "model.safetensors"
    if damage == "truncate":
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif damage == "no manifest":
        (folder / loadcache.MANIFEST).unlink()
    else:
        manifest = json.loads((folder / loadcache.MANIFEST).read_text())
        (folder / loadcache.MANIFEST).write_text(json.dumps({**manifest, "transformers": "4.0.0"}))
    with caplog.at_level(logging.WARNING, logger="neuronloc.loadcache"):
        assert loadcache.load(digest, torch.float32, lambda f: pytest.fail("read a damaged entry")) is None
    assert "corrupt" in caplog.text and not folder.exists()
    loadcache.save(digest, torch.float32, warm.model, warm.tokenizer)  # what load_model does after the parse
    assert loadcache.load(digest, torch.float32, lambda f: "read") == "read"


def test_second_writer_keeps_the_first_entry(loads, monkeypatch):
    """Two processes that both missed write one entry each; the first rename wins, no temp folder stays."""
    _, warm, _, root = loads
    monkeypatch.setenv("NEURONLOC_CACHE", str(root))
    digest = "0" * 64
    loadcache.save(digest, torch.float32, warm.model, warm.tokenizer)
    folder = loadcache.entry(digest, torch.float32)
    manifest = (folder / loadcache.MANIFEST).stat().st_mtime_ns
    loadcache.save(digest, torch.float32, warm.model, warm.tokenizer)
    assert (folder / loadcache.MANIFEST).stat().st_mtime_ns == manifest
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []
    assert set(json.loads((folder / loadcache.MANIFEST).read_text())["files"]) >= {"model.safetensors", "config.json"}


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.delenv("NEURONLOC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert loadcache.cache_root() == tmp_path / "neuronloc"
    monkeypatch.setenv("NEURONLOC_CACHE", str(tmp_path / "mine"))
    assert loadcache.cache_root() == tmp_path / "mine"


def test_stale_temp_folders_are_removed(tmp_path):
    old, fresh = tmp_path / ".abc-float32.x1.tmp", tmp_path / ".abc-float32.x2.tmp"
    old.mkdir(), fresh.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    loadcache._remove_stale(tmp_path)
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a writer at work
