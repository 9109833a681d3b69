"""A notebook killed in the middle of its attribution resumes from the score cache: the
re-run recomputes only the questions that were not finished, and its claims.json is
identical to that of a run that was never interrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

CELLS = [
    'CACHE = ""\nOUT = ""',
    f"""import sys, time
sys.path.insert(0, {str(TESTS)!r})
from pathlib import Path
import neuronloc as nl
from conftest import tiny_llama
from neuronloc.claims import Estimate, measured, write_claims
from neuronloc.localization import locate
from neuronloc.store import Store

lm = tiny_llama(seed=7)
base = nl.Task("toy", [nl.MCQuestion(stem=f"What is {{a}}+{{a}}?", options=("2", "4", "6", "8"), answer=a % 4, uid=f"q{{a}}")
                       for a in range(1, 9)])
questions = base.questions""",
    """class SlowStore(Store):  # a question takes ~0.4 s, so the test can kill the run between two
    def put(self, key, obj):
        path = super().put(key, obj)
        time.sleep(0.4)
        return path

found = locate(lm, questions, "ace", k=5, z=10, steps=3, store=SlowStore(CACHE), progress=False)""",
    """write_claims(Path(OUT) / "claims.json", [measured("NL-01", Estimate(float(found.scores.abs().sum())))])""",
]


def _notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _run(nb: Path, cache: Path, out: Path) -> subprocess.Popen:
    out.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "papermill", str(nb), str(out / "run.ipynb"), "-k", "python3",
                             "-p", "CACHE", str(cache), "-p", "OUT", str(out), "--no-progress-bar"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def test_killed_notebook_resumes_from_the_cache(tmp_path):
    nb = tmp_path / "resume.ipynb"
    _notebook(nb)
    clean = _run(nb, tmp_path / "cache-clean", tmp_path / "clean")
    assert clean.wait(timeout=600) == 0, clean.stderr.read().decode()[-2000:]

    cache = tmp_path / "cache"
    first = _run(nb, cache, tmp_path / "killed")
    deadline = time.monotonic() + 600
    while len(list(cache.glob("*.pt"))) < 3:  # some questions finished, others not
        assert first.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the kernel and papermill, as a Ctrl-C'd or crashed session
    first.wait()
    done = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    assert 3 <= len(done) < 8 and not (tmp_path / "killed" / "claims.json").exists()

    again = _run(nb, cache, tmp_path / "resumed")
    assert again.wait(timeout=600) == 0, again.stderr.read().decode()[-2000:]
    after = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.pt")}
    assert len(after) == 8
    assert all(after[name] == mtime for name, mtime in done.items())  # finished questions were not recomputed
    resumed = json.loads((tmp_path / "resumed" / "claims.json").read_text())
    assert resumed == json.loads((tmp_path / "clean" / "claims.json").read_text())
