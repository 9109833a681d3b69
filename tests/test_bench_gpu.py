"""bench/bench_gpu.py, the GPU bench of the 7B path, checked on its tiny shape on the CPU:
it builds a random LLaMA through `models.from_module`, its fast and reference IG agree, and it
writes the fields the README reads. The 7B shape refuses a CPU without building anything."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_gpu(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    return module


def test_tiny_shape_on_cpu_writes_its_record(bench_gpu, tmp_path):
    out = bench_gpu.main(shape="tiny", device="cpu", steps=4, repeat=1, name="gpu_tiny")
    written = json.loads((tmp_path / "gpu_tiny.json").read_text())
    assert written == out
    assert out["layers"] == 2 and out["steps"] == 4 and out["dtype"] == "torch.float32"
    assert set(out["phases"]) == {"ig_fast", "ig_reference", "neurgrad"}
    assert all(p["seconds"] > 0 and p["peak_above_weights_gib"] is None for p in out["phases"].values())
    assert out["max_rel_err_fast_vs_reference"] < 1e-4


def test_7b_shape_refuses_a_cpu(bench_gpu, tmp_path, capsys):
    assert bench_gpu.main(shape="7b", device="cpu") == {}
    assert "needs a CUDA device" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
