"""Bad input gets one clear line on stderr (exit 2) and loses nothing:
unknown model, unsupported architecture, missing data file, malformed record,
multi-token option label."""
from __future__ import annotations

import json

import pytest
import transformers as tf

from neuronloc.cli import main
from neuronloc.models import ModelNotFoundError, load_model
from neuronloc.sites import UnsupportedModelError
from neuronloc.tasks import MCQuestion, TaskError, label_token_ids, render

from conftest import CharTokenizer


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


def test_missing_gguf_file():
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        load_model("/nonexistent/model.gguf")


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
