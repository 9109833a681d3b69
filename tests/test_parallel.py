"""Attribution split across processes gives exactly the scores of one process.

Two real processes under torch's own launcher (`torchrun`, what `accelerate launch` runs
for several processes: it sets RANK / WORLD_SIZE / LOCAL_RANK) each score their share of
the questions into one cache folder and read the rest from it (`neuronloc.parallel`).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from neuronloc.parallel import Shard, gather
from neuronloc.store import Store, key

TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {tests!r})
    import neuronloc as nl
    from conftest import tiny_llama
    from neuronloc.localization import locate
    from neuronloc.store import Store

    lm = tiny_llama(seed=5)
    base = nl.Task("toy", [nl.MCQuestion(stem=f"What is {{a}}+{{a}}?", options=("2", "4", "6", "8"), answer=a % 4,
                                         uid=f"q{{a}}") for a in range(1, 4)])
    questions = nl.qatt(base, n_proxies=3, seed=0).questions  # 9 questions: shares of 5 and 4
    got = locate(lm, questions, "ace", k=5, z=10, steps=3, store=Store(sys.argv[1]), progress=False)
    torch.save({{"scores": got.scores, "good": got.good, "bad": got.bad,
                "shard": (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))}},
               os.path.join(sys.argv[2], f"out{{os.environ.get('RANK', 'single')}}.pt"))
""")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", NEURONLOC_GATHER_TIMEOUT="300", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent / "lib"), env.get("PYTHONPATH", "")])
    return env


def test_two_processes_give_the_scores_of_one(tmp_path):
    script = tmp_path / "locate.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    out = tmp_path / "out"
    out.mkdir()
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "cache1"), str(out)], env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    launch = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(tmp_path / "cache2"), str(out)], env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert launch.returncode == 0, launch.stderr[-2000:]
    one = torch.load(out / "outsingle.pt")
    assert one["shard"] == (0, 1)
    for rank in (0, 1):
        part = torch.load(out / f"out{rank}.pt")
        assert part["shard"] == (rank, 2)
        assert torch.equal(part["scores"], one["scores"])
        assert torch.equal(part["good"], one["good"]) and torch.equal(part["bad"], one["bad"])
    # each process scored its own share: 9 question files in the shared cache, as with one process
    assert len(list((tmp_path / "cache2").glob("*.pt"))) == len(list((tmp_path / "cache1").glob("*.pt"))) == 9


def test_shards_partition_the_questions():
    shares = [Shard(r, 3).mine(10) for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(shares, [])) == list(range(10))
    assert Shard().mine(3) == [0, 1, 2] and Shard().main


def test_shard_reads_the_launcher_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert Shard.current() == Shard(1, 4) and not Shard.current().main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK < WORLD_SIZE"):
        Shard.current()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        Shard.current()


def test_gather_waits_then_names_what_never_came(tmp_path):
    store = Store(tmp_path)
    keys = [key(i=i) for i in range(2)]
    store.put(keys[0], torch.ones(2))
    with pytest.raises(RuntimeError, match="1 of 2 question scores never appeared"):
        gather(store, keys, timeout=0.2, poll=0.05, progress=False)
    store.put(keys[1], torch.zeros(2))
    got = gather(store, keys, timeout=0, progress=False)
    assert torch.equal(got[0], torch.ones(2)) and torch.equal(got[1], torch.zeros(2))


def test_several_processes_need_the_cache(monkeypatch):
    from conftest import tiny_llama
    from neuronloc.localization.methods import question_scores

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="merge their scores through the score cache"):
        question_scores(tiny_llama(), [], "ig", "option_prob")


def test_cli_refuses_no_cache_with_several_processes(monkeypatch, capsys):
    from neuronloc.cli import main

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["attribute", "--task", "neuronllm/sentiment", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-cache cannot be used with 2 processes" in err
