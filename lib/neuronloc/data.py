"""Data root, sha256 manifest, `make data` and strict JSON readers.

ARCHITECTURE "Data": every data file the loaders read lives under `data_root()`
($NEURONLOC_DATA, else <repo>/data) and is listed with its sha256 in the repo's
`data/SHA256SUMS`. `fetch()` (= `make data` = `python -m neuronloc.data`) fills the
root from a local mirror ($NEURONLOC_DATA_MIRROR, e.g. ../shared/data) or, online,
from the raw GitHub blobs the mirror was copied from (repo@commit in `SOURCES`),
and checks every file. `path(rel)` hands a file to a loader only when it is there
and intact; `read_json` / `read_records` turn a malformed file or record into one
`DataError` line that names the file, the record and what is wrong.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

MAKE_DATA = "run `make data` (with NEURONLOC_DATA_MIRROR=/path/to/mirror when offline)"

# (local prefix, GitHub repo, commit, path prefix in that repo): the sources named in
# the mirror's MANIFEST.md; a file's URL is raw.githubusercontent.com/repo/commit/path.
SOURCES = [
    ("mceval8k/", "xzhao-tkl/NEG", "2026899ea6389af56cf0d54f4aa82eb75f84762f", "NeuronProbe/MCEval8K/"),
    ("lre_relations/", "zjunlp/KnowledgeCircuits", "bda3d22cf3b74a6b48c092f952e95b6414d8a9de", "data/"),
    ("pararel/", "yanaiela/pararel", "cb5554678457beb5ac163d888f1ce8cf174b3f0b", "data/"),
    ("counterfact_mend/", "Jometeorie/KnowledgeSpread", "51d7402617c2e52bde0dc11b76e400c3725a181a", "data/counterfact/"),
    ("zsre_mend/", "Jometeorie/KnowledgeSpread", "51d7402617c2e52bde0dc11b76e400c3725a181a", "data/zsre/"),
    ("gsm8k/", "openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c", "grade_school_math/data/"),
    ("metamath_eval/", "meta-math/MetaMath", "fe667b14f9a4c51bde9809adafb82b6b5d255800", "data/test/"),
    ("emotion_carer/", "chanys/tnlp", "5e8b93f06512c4d45fed0358a6021e1df891cc1c", "data/emotion/"),
    ("sst2/glue_train_split/", "forest-snow/alps", "3c7ef2c98249fc975a897b27f275695f97d5b7a9", "data/SST-2/"),
    ("sst2/sentence_level/", "yaolu/ordered-prompt", "e93f70d0a5f6a8cfcadf6f2917c26eed265cd0be", "data/sst2/"),
    ("sst5/", "yaolu/ordered-prompt", "e93f70d0a5f6a8cfcadf6f2917c26eed265cd0be", "data/sst5/"),
    ("humaneval/", "openai/human-eval", "6d43fb980f9fee3c892a914eda09951f772ad10d", "data/"),
    ("mbpp/", "FormulaMonks/llm-benchmarker-suite", "5d3c8009ab8f5adab4899c34dd203cbf7afcb372", "data/mbpp/"),
    ("code_alpaca/", "sahil280114/codealpaca", "2f78ddc5c682ed6738ad092bbbfa59ba915afcb0", "data/"),
    ("conll2000/", "nltk/nltk_data", "5db857e6f7df11eabb5e5665836db9ec8df07e28", "packages/corpora/"),
    ("commonsenseqa/", "lionzwarrior/llm-benchmark", "8866ece85533b6532bdf67f9258e88a9902dcf40", ""),
]


class DataError(ValueError):
    """A data file that is missing, corrupt or malformed; the message says which and what to do."""


# --------------------------------------------------------------------------- locations

def repo_root() -> Path | None:
    """The directory holding pyproject.toml above this package (None when installed elsewhere)."""
    for d in Path(__file__).resolve().parents:
        if (d / "pyproject.toml").is_file():
            return d
    return None


def data_root() -> Path:
    """$NEURONLOC_DATA, else <repo>/data, else ./data."""
    env = os.environ.get("NEURONLOC_DATA")
    if env:
        return Path(env).expanduser()
    return (repo_root() or Path.cwd()) / "data"


def manifest_path() -> Path:
    """data/SHA256SUMS ships with the repository (not with the data root)."""
    return (repo_root() or Path.cwd()) / "data" / "SHA256SUMS"


_MANIFEST: dict[Path, dict[str, str]] = {}


def manifest() -> dict[str, str]:
    """{relative path: sha256} from data/SHA256SUMS (`sha256sum` format)."""
    mpath = manifest_path()
    if mpath not in _MANIFEST:
        if not mpath.is_file():
            raise DataError(f"{mpath} not found: the sha256 manifest ships with the neuronloc repository")
        sums = {}
        for i, line in enumerate(mpath.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            sha, _, rel = line.partition("  ")
            if len(sha) != 64 or not rel:
                raise DataError(f"{mpath}: line {i}: expected '<sha256>  <relative path>', got {line[:80]!r}")
            sums[rel.strip()] = sha
        _MANIFEST[mpath] = sums
    return _MANIFEST[mpath]


def source_url(rel: str) -> str:
    """Canonical download URL of a manifest file (the blob the mirror copied)."""
    for prefix, repo, commit, remote in SOURCES:
        if rel.startswith(prefix):
            return f"https://raw.githubusercontent.com/{repo}/{commit}/{remote}{rel[len(prefix):]}"
    raise DataError(f"no source URL known for data file {rel}")


# --------------------------------------------------------------------------- integrity

def sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_CHECKED: set[tuple[str, int, int]] = set()  # (path, mtime, size) already hashed OK: hash each file once


def _check(file: Path, rel: str, expected: str) -> None:
    st = file.stat()
    key = (str(file.resolve()), st.st_mtime_ns, st.st_size)
    if key in _CHECKED:
        return
    got = sha256(file)
    if got != expected:
        raise DataError(f"data file {rel} in {file.parent} is corrupt or changed (sha256 {got[:12]}..., "
                        f"data/SHA256SUMS has {expected[:12]}...); {MAKE_DATA} to replace it")
    _CHECKED.add(key)


def path(rel: str) -> Path:
    """Absolute path of data file `rel` (e.g. "gsm8k/test.jsonl"), checked against SHA256SUMS.

    Missing or changed file: DataError naming it and saying how `make data` gets it.
    """
    file = data_root() / rel
    if not file.is_file():
        raise DataError(f"data file {rel} is missing from {data_root()}; {MAKE_DATA}")
    expected = manifest().get(rel)
    if expected is not None:  # generated files outside the manifest are not checked
        _check(file, rel, expected)
    return file


def verify(root: str | Path | None = None, progress: bool = False) -> list[str]:
    """Problems (one line each) of the files in `root` against SHA256SUMS; [] when all is well."""
    root = Path(root) if root else data_root()
    problems = []
    for rel, expected in _progress(sorted(manifest().items()), progress, "verify"):
        file = root / rel
        if not file.is_file():
            problems.append(f"{rel} missing")
        elif sha256(file) != expected:
            problems.append(f"{rel} sha256 mismatch")
    return problems


# --------------------------------------------------------------------------- fetch (`make data`)

def _progress(items, on: bool, desc: str):
    if not on:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="file", file=sys.stderr)


def _download(url: str, dst: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dst, "wb") as f:
            shutil.copyfileobj(response, f)
    except (urllib.error.URLError, OSError) as err:  # HTTPError is a URLError too
        reason = getattr(err, "reason", err)
        raise DataError(f"cannot download {url} ({reason}); offline? set NEURONLOC_DATA_MIRROR=/path/to/mirror "
                        "(e.g. ../shared/data) and run `make data`") from None


def fetch(mirror: str | Path | None = None, root: str | Path | None = None, force: bool = False,
          progress: bool = False) -> dict[str, int]:
    """Fill the data root with every file of SHA256SUMS and verify each one.

    Source: `mirror`, else $NEURONLOC_DATA_MIRROR (files are copied), else the raw
    GitHub URLs of `SOURCES` (needs internet). Files already present with the right
    hash are skipped unless `force`. Writes go through a ".part" file, so an
    interrupted fetch never leaves a truncated file under its real name.
    Returns counts {"present", "copied", "downloaded"}.
    """
    mirror = mirror or os.environ.get("NEURONLOC_DATA_MIRROR") or None
    root = Path(root) if root else data_root()
    if mirror is not None and not Path(mirror).is_dir():
        raise DataError(f"data mirror {mirror} is not a directory; point NEURONLOC_DATA_MIRROR at the mirror (e.g. ../shared/data)")
    counts = {"present": 0, "copied": 0, "downloaded": 0}
    for rel, expected in _progress(sorted(manifest().items()), progress, "data"):
        dst = root / rel
        if not force and dst.is_file() and sha256(dst) == expected:
            counts["present"] += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(dst.name + ".part")
        try:
            if mirror is not None:
                src, kind = Path(mirror) / rel, "copied"
                if not src.is_file():
                    raise DataError(f"data mirror {mirror} has no {rel}; is it the neuronloc data mirror (see its MANIFEST.md)?")
                shutil.copyfile(src, part)
            else:
                src, kind = source_url(rel), "downloaded"
                _download(src, part)
            got = sha256(part)
            if got != expected:
                raise DataError(f"{rel} from {src} has sha256 {got[:12]}..., data/SHA256SUMS expects {expected[:12]}...")
            os.replace(part, dst)
        finally:
            part.unlink(missing_ok=True)
        counts[kind] += 1
    return counts


# --------------------------------------------------------------------------- readers

def _resolve(file: str | Path) -> tuple[Path, str]:
    """(path, name for messages): a relative name is a data file (checked), an absolute path is read as is."""
    if Path(file).is_absolute():
        if not Path(file).is_file():
            raise DataError(f"file {file} not found")
        return Path(file), str(file)
    return path(str(file)), str(file)


def read_json(file: str | Path):
    """The parsed content of a JSON file; invalid JSON is a DataError naming file, line and column."""
    p, name = _resolve(file)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{name}: line {err.lineno} column {err.colno}: invalid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{name}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def check_fields(records: Iterable, fields: Iterable[str], where: str) -> list[dict]:
    """Each record must be a JSON object with `fields`; `where` names the file (and key) in messages.
    Records are numbered from 0 (their index in the array)."""
    records, fields = list(records), tuple(fields)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{where}: record {i}: expected a JSON object, got {type(rec).__name__}")
        for f in fields:
            if f not in rec:
                raise DataError(f"{where}: record {i}: missing field {f!r}")
    return records


def read_records(file: str | Path, fields: Iterable[str] = ()) -> list[dict]:
    """Records of a .json (one array of objects), .jsonl or .jsonl.gz (one object per line) file,
    each checked to carry `fields`. JSON arrays count records from 0, JSONL lines from 1."""
    p, name = _resolve(file)
    fields = tuple(fields)
    if p.name.endswith(".json"):
        data = read_json(file)
        if not isinstance(data, list):
            raise DataError(f"{name}: expected a JSON array of records, got {type(data).__name__}")
        return check_fields(data, fields, name)
    opener = gzip.open if p.name.endswith(".gz") else open
    records = []
    with opener(p, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{name}: line {lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{name}: line {lineno}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in fields if k not in rec]
            if missing:
                raise DataError(f"{name}: line {lineno}: missing field {missing[0]!r}")
            records.append(rec)
    return records


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neuronloc.data",
                                 description="Fill the data root (`make data`) and check it against data/SHA256SUMS.")
    ap.add_argument("--mirror", help="local mirror directory (default $NEURONLOC_DATA_MIRROR; without one, download)")
    ap.add_argument("--root", help="data root (default $NEURONLOC_DATA, else <repo>/data)")
    ap.add_argument("--verify-only", action="store_true", help="only check the files already there")
    ap.add_argument("--force", action="store_true", help="fetch again files that are already present")
    args = ap.parse_args(argv)
    root = Path(args.root) if args.root else data_root()
    try:
        n = len(manifest())
        if args.verify_only:
            problems = verify(root, progress=True)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise DataError(f"{len(problems)} of {n} data files bad in {root}: {problems[0]}{more}; {MAKE_DATA}")
            print(f"data: all {n} files in {root} match data/SHA256SUMS")
        else:
            c = fetch(args.mirror, root, force=args.force, progress=True)
            print(f"data: {n} files verified in {root} ({c['copied']} copied, {c['downloaded']} downloaded, "
                  f"{c['present']} already present)")
    except (DataError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
