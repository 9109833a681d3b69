"""data.py: data root, sha256 manifest, fetch (`make data`), strict readers.

The files come from the filled data root (CI runs `make data` first) or, when it is
not filled, from the mirror ($NEURONLOC_DATA_MIRROR, else ../shared/data next to the repo).
"""
import json
import os
import urllib.error
from pathlib import Path

import pytest

from neuronloc import data
from neuronloc.data import DataError


@pytest.fixture(scope="module")
def source() -> Path:
    """A directory holding every manifest file with the right hash."""
    if not data.verify():
        return data.data_root()
    mirror = os.environ.get("NEURONLOC_DATA_MIRROR") or (data.repo_root() / ".." / "shared" / "data")
    if Path(mirror).is_dir() and not data.verify(mirror):
        return Path(mirror)
    pytest.fail(f"data root {data.data_root()} is not filled and no mirror found; {data.MAKE_DATA}")


def link_mirror(source: Path, mirror: Path) -> Path:
    """A temporary mirror: symlinks to the source files (no 90 MB copy)."""
    for rel in data.manifest():
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).symlink_to((source / rel).resolve())
    return mirror


def test_data_root_and_manifest(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURONLOC_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    monkeypatch.delenv("NEURONLOC_DATA")
    assert data.data_root() == data.repo_root() / "data"
    sums = data.manifest()
    assert len(sums) == 216 and all(len(s) == 64 for s in sums.values())
    assert data.source_url("gsm8k/test.jsonl") == ("https://raw.githubusercontent.com/openai/grade-school-math/"
                                                   "3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/test.jsonl")
    assert all(data.source_url(rel) for rel in sums)  # every file has a download URL


def test_missing_file_names_it_and_make_data(monkeypatch, tmp_path):
    from neuronloc.tasks.loaders import load_examples, load_task

    monkeypatch.setenv("NEURONLOC_DATA", str(tmp_path))
    for call, rel in [(lambda: data.path("gsm8k/test.jsonl"), "gsm8k/test.jsonl"),
                      (lambda: load_task("neuronllm/sentiment"), "sst5/test.jsonl"),
                      (lambda: load_task("neuronllm/chunking"), "conll2000/conll2000.zip"),
                      (lambda: load_examples("gsm8k"), "gsm8k/test.jsonl")]:
        with pytest.raises(DataError) as err:
            call()
        assert rel in str(err.value) and "make data" in str(err.value) and "NEURONLOC_DATA_MIRROR" in str(err.value)


def test_hash_mismatch_detected(monkeypatch, tmp_path, source):
    rel = "gsm8k/test.jsonl"
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / rel).write_bytes((source / rel).read_bytes() + b"\n")
    monkeypatch.setenv("NEURONLOC_DATA", str(tmp_path))
    with pytest.raises(DataError, match="gsm8k/test.jsonl .*corrupt or changed.*make data"):
        data.path(rel)
    assert f"{rel} sha256 mismatch" in data.verify(tmp_path)


def test_fetch_from_temp_mirror_is_idempotent(tmp_path, source):
    mirror, root = link_mirror(source, tmp_path / "mirror"), tmp_path / "root"
    assert data.fetch(mirror, root) == {"present": 0, "copied": 216, "downloaded": 0}
    assert data.verify(root) == []
    assert data.fetch(mirror, root) == {"present": 216, "copied": 0, "downloaded": 0}
    (root / "zsre_mend/zsre_mend_train-1k.json").write_text("[]")  # a damaged file is fetched again
    assert data.fetch(mirror, root) == {"present": 215, "copied": 1, "downloaded": 0}
    assert data.fetch(mirror, root, force=True)["copied"] == 216


def test_fetch_rejects_a_bad_mirror_file(tmp_path, source):
    mirror, root = link_mirror(source, tmp_path / "mirror"), tmp_path / "root"
    bad = mirror / "commonsenseqa/dev_rand_split.jsonl"
    bad.unlink()
    bad.write_text("{}\n")
    with pytest.raises(DataError, match="commonsenseqa/dev_rand_split.jsonl .*sha256"):
        data.fetch(mirror, root)
    assert not (root / "commonsenseqa").exists() or not any((root / "commonsenseqa").iterdir())  # nothing half-written


def test_fetch_offline_is_a_clear_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.delenv("NEURONLOC_DATA_MIRROR", raising=False)
    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="cannot download https://raw.githubusercontent.com/.*NEURONLOC_DATA_MIRROR"):
        data.fetch(root=tmp_path)


def test_cli(tmp_path, source, capsys):
    mirror = link_mirror(source, tmp_path / "mirror")
    assert data.main(["--root", str(tmp_path / "empty"), "--verify-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 216 of 216 data files bad") and "make data" in err
    assert data.main(["--mirror", str(mirror), "--root", str(tmp_path / "root")]) == 0
    assert "216 files verified" in capsys.readouterr().out
    assert data.main(["--mirror", str(tmp_path / "nowhere"), "--root", str(tmp_path / "root")]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback


# --------------------------------------------------------------------------- readers

def test_invalid_json_names_file_and_line(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('[\n {"text": "a", "label": 0},\n {"text": "b", "label": }\n]')
    with pytest.raises(DataError, match=r"bad.json: line 3 column \d+: invalid JSON"):
        data.read_records(f)


def test_record_missing_field_names_file_and_record(tmp_path):
    f = tmp_path / "recs.json"
    f.write_text(json.dumps([{"text": "a", "label": 0}, {"text": "b"}]))
    with pytest.raises(DataError, match=r"recs.json: record 1: missing field 'label'"):
        data.read_records(f, fields=("text", "label"))
    f.write_text(json.dumps([{"text": "a", "label": 0}, ["b", 1]]))
    with pytest.raises(DataError, match=r"recs.json: record 1: expected a JSON object, got list"):
        data.read_records(f, fields=("text", "label"))
    f.write_text(json.dumps({"text": "a"}))
    with pytest.raises(DataError, match="expected a JSON array"):
        data.read_records(f)


def test_jsonl_errors_name_the_line(tmp_path):
    f = tmp_path / "recs.jsonl"
    f.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"\n')
    with pytest.raises(DataError, match=r"recs.jsonl: line 2: invalid JSON"):
        data.read_records(f)
    f.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2"}\n')
    with pytest.raises(DataError, match=r"recs.jsonl: line 2: missing field 'answer'"):
        data.read_records(f, fields=("question", "answer"))


def test_bad_record_in_a_loader_names_file_and_record():
    from neuronloc.tasks import loaders

    genre, fields, make = loaders.MCEVAL8K["agnews"]
    records = [{"text": "a", "label": 0}, {"text": "b", "label": 7}]
    with pytest.raises(DataError, match=r"agnews/test.json: record 1: label 7 is not one of \[0, 1, 2, 3\]"):
        loaders._build("mceval8k/agnews", "test", "mceval8k/classification/agnews/test.json", records, [0, 1],
                       lambda r, rng: make(r, ""), 0, None, {})
