"""The results cache: keys, hits, corruption, atomic writes."""
from __future__ import annotations

import logging
import os
import stat

import pytest
import torch
from conftest import tiny_llama

from neuronloc.store import Store, key, model_fingerprint
from neuronloc.tasks import MCQuestion

OBJ = {"scores": torch.randn(3, 48), "meta": {"method": "ig", "steps": 16}}


def _counting(obj=OBJ):
    calls = []

    def fn():
        calls.append(1)
        return obj
    return fn, calls


def test_rerun_hits_the_cache(tmp_path):
    store, k = Store(tmp_path), key(method="ig", params={"steps": 16})
    fn, calls = _counting()
    first = store.cached(k, fn)
    second = Store(tmp_path).cached(k, fn)  # a new process would open the same folder
    assert len(calls) == 1
    assert torch.equal(second["scores"], OBJ["scores"]) and second["meta"] == OBJ["meta"]
    assert first is OBJ
    assert store.get("0" * 64) is None


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_file_is_a_miss_and_recomputed(tmp_path, caplog, damage):
    store, k = Store(tmp_path), key(method="ig")
    path = store.put(k, OBJ)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    fn, calls = _counting()
    with caplog.at_level(logging.WARNING, logger="neuronloc.store"):
        out = store.cached(k, fn)
    assert len(calls) == 1 and "corrupt" in caplog.text
    assert torch.equal(store.get(k)["scores"], out["scores"])  # rewritten, valid again


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    store, k = Store(tmp_path), key(method="ig")
    store.put(k, {"old": 1})

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        store.put(k, OBJ)
    with pytest.raises(OSError):
        store.put(key(method="other"), OBJ)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{k}.pt"]  # no temp files, no new entry
    monkeypatch.undo()
    assert store.get(k) == {"old": 1}  # the previous entry is intact


def test_keys():
    q = MCQuestion("2 + 2?", ("3", "4"), 1, uid="a")
    base = dict(model="m", site="ffn.mid", task=[q], method="ig", params={"steps": 16, "rule": "right"})
    assert key(**base) == key(**{**base, "params": {"rule": "right", "steps": 16}})  # order does not matter
    different = [
        {**base, "params": {"steps": 17, "rule": "right"}},
        {**base, "method": "neurgrad"},
        {**base, "site": "ffn.up"},
        {**base, "task": [MCQuestion("2 + 2?", ("4", "3"), 0, uid="a")]},
        {**base, "task": [MCQuestion("2 + 2?", ("3", "4"), 1, uid="b")]},
        {**base, "mask": torch.ones(3)},
    ]
    keys = {key(**base)} | {key(**d) for d in different}
    assert len(keys) == len(different) + 1
    assert key(t=torch.arange(4)) == key(t=torch.arange(4)) != key(t=torch.arange(4.0))
    with pytest.raises(TypeError, match="cannot key"):
        key(x=object())


def test_model_fingerprint_follows_weights():
    a, b = tiny_llama(seed=0), tiny_llama(seed=1)
    fa = model_fingerprint(a.model)
    assert fa == model_fingerprint(tiny_llama(seed=0).model) != model_fingerprint(b.model)
    assert key(model=a) != key(model=b)
    with torch.no_grad():  # an in-place edit (as fine-tuning does) gives a new fingerprint
        a.model.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0
    assert model_fingerprint(a.model) != fa


def test_for_model(tmp_path):
    store = Store.for_model(tmp_path / "results", "tiny-llama")
    store.put(key(x=1), {"x": 1})
    assert store.root == tmp_path / "results" / "tiny-llama" / "cache"
    assert store.get(key(x=1)) == {"x": 1}


def test_file_under_another_key_is_a_miss(tmp_path, caplog):
    """A valid file copied over another key's file is not trusted: its stored key is checked."""
    store, a, b = Store(tmp_path), key(method="ig", params={"steps": 16}), key(method="ig", params={"steps": 8})
    store.put(a, {"which": "a"})
    store.put(b, {"which": "b"})
    store.path(b).write_bytes(store.path(a).read_bytes())
    fn, calls = _counting({"which": "b, recomputed"})
    with caplog.at_level(logging.WARNING, logger="neuronloc.store"):
        assert store.cached(b, fn) == {"which": "b, recomputed"}
    assert len(calls) == 1 and "another key" in caplog.text
    assert store.get(a) == {"which": "a"} and store.get(b) == {"which": "b, recomputed"}


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = Store(tmp_path).put(key(x=1), OBJ)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
