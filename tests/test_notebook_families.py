"""Every notebook end to end on tiny random models of three structurally different families
(issue 20 item 3), saved to a temporary folder and passed as MODEL, the way a user passes a
local checkpoint:

  llama        LLaMA-style: gated SiLU MLP, RMSNorm, grouped-query attention
  gemma3_text  Gemma-3-style: sliding-window layers (a window shorter than the prompts),
               a norm after the MLP, query pre-attention scaling, tied embeddings
  gpt_neox     GPT-NeoX-style: fused QKV, parallel attention and MLP, GELU MLP, LayerNorm

The numbers mean nothing (random weights); the test asserts that each notebook runs to its
end at SCALE=smoke and writes a claims.json holding every claim id the notebook owns (the
ids of its committed smoke results). Two families run at once (the runs are mostly
single-threaded Python at these sizes).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SMOKE = ROOT / "results" / "smoke" / "smollm2-135m"
FAMILIES = ("llama", "gemma3_text", "gpt_neox")


def _config(family: str, vocab: int, tok):
    import transformers as tf

    ids = dict(vocab_size=vocab, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    common = dict(ids, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  max_position_embeddings=2048)
    if family == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**common, num_key_value_heads=2, tie_word_embeddings=True))
    if family == "gemma3_text":
        return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
            **common, num_key_value_heads=2, head_dim=16, sliding_window=16,
            layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]))
    if family == "gpt_neox":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**common, use_parallel_residual=True, tie_word_embeddings=False))
    raise ValueError(family)


def save_tiny(family: str, folder: Path, tok) -> Path:
    """A tiny random `family` model with the tokenizer `tok` (the embedded model's), saved as a checkpoint."""
    torch.manual_seed(0)
    model = _config(family, len(tok), tok)
    path = folder / f"tiny-{family}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _owned(notebook: str) -> set[str]:
    path = SMOKE / notebook / "claims.json"
    if not path.exists():
        return set()
    data = json.loads(path.read_text())
    return {row["id"] for row in (data["claims"] if isinstance(data, dict) else data)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{family: (exit status, output, results folder of the model)} of every notebook at SCALE=smoke."""
    from neuronloc.models import load_model

    base = tmp_path_factory.mktemp("families")
    tok = load_model("smollm2-135m").tokenizer
    models = {family: save_tiny(family, base, tok) for family in FAMILIES}  # here: loading in two threads at once races

    def run(family):
        model = models[family]
        out, figures = base / f"out-{family}", base / f"fig-{family}"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), "--model", str(model),
                               "--scale", "smoke", "--out", str(out), "--figures", str(figures)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
        folders = [p for p in out.iterdir() if p.is_dir()] if out.exists() else []
        return family, (done.returncode, done.stdout + done.stderr, folders[0] if len(folders) == 1 else None)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, FAMILIES))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_notebook_runs_on_a_tiny_model_of_the_family(runs, family):
    status, output, folder = runs[family]
    assert status == 0, f"{family}: run_notebooks failed:\n{output[-4000:]}"
    assert folder is not None, output[-2000:]
    for notebook in NOTEBOOKS:
        owned = _owned(notebook)
        if not owned:  # 00 and 07 own no claim: they ran (status 0) and wrote their executed copy
            assert (folder / notebook / f"{notebook}.ipynb").exists(), notebook
            continue
        path = folder / notebook / "claims.json"
        assert path.exists(), f"{family}: {notebook} wrote no claims.json"
        data = json.loads(path.read_text())
        got = {row["id"] for row in (data["claims"] if isinstance(data, dict) else data)}
        assert got == owned, f"{family}: {notebook} claims missing {sorted(owned - got)}, extra {sorted(got - owned)}"
