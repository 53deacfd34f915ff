"""Streaming HF dir -> HF dir (`convert`, and through it `vocab adapt` and `propagate`): the checkpoint's own dtype
kept bit for bit, casts equal torch's, sharded sources, and the checks of a load without loading the model."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from jaxadapt.cli import main
from jaxadapt.io.rewrite import checkpoint_dtype, rewrite
from jaxadapt.io.hf import read_config
from jaxadapt.io.safetensors import CheckpointError


def _tensors(d):
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture
def bf16_dir(hf_dir, tmp_path):
    """A tiny untied llama saved by transformers in bfloat16, in two safetensors shards."""
    src, model = hf_dir("llama_gqa")
    out = tmp_path / "bf16"
    model.to(torch.bfloat16).save_pretrained(out, max_shard_size="100KB")
    assert len(list(out.glob("*.safetensors"))) > 1
    return out


def test_convert_keeps_a_bfloat16_checkpoint_bit_for_bit(bf16_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["convert", str(bf16_dir), str(out)]) == 0
    a, b = _tensors(bf16_dir), _tensors(out)
    assert sorted(a) == sorted(b)
    assert all(b[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16" == checkpoint_dtype(out)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_convert_casts_as_torch_does(bf16_dir, tmp_path, dtype):
    out = tmp_path / dtype
    assert main(["convert", str(bf16_dir), str(out), "--dtype", dtype]) == 0
    a, b = _tensors(bf16_dir), _tensors(out)
    want = getattr(torch, dtype)
    assert all(b[k].dtype == want and torch.equal(a[k].to(want), b[k]) for k in a)
    if dtype != "float32":
        return
    ids = torch.arange(256).remainder(a["model.embed_tokens.weight"].shape[0])[None]
    with torch.no_grad():  # transformers reads the result as the model it is
        got = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
        ref = AutoModelForCausalLM.from_pretrained(bf16_dir, dtype=torch.float32)(ids).logits
    assert torch.equal(got, ref)


def test_float32_to_bfloat16_rounds_as_torch(hf_dir, tmp_path):
    src, _ = hf_dir("qwen2_tied")
    out = rewrite(src, tmp_path / "out", read_config(src), "bfloat16")
    a, b = _tensors(src), _tensors(out)
    assert all(torch.equal(a[k].to(torch.bfloat16), b[k]) for k in a)


def test_replace_and_edit(hf_dir, tmp_path):
    """`replace` supplies whole tensors (a new vocabulary size), `edit` changes the others on their way through."""
    src, _ = hf_dir("llama_gqa")
    cfg = read_config(src)
    bigger = cfg.replace(vocab_size=cfg.vocab_size + 8)
    rows = np.full((bigger.vocab_size, cfg.hidden_size), 0.5, np.float32)
    out = rewrite(src, tmp_path / "out", bigger, "float32",
                  replace={"model.embed_tokens.weight": lambda: rows, "lm_head.weight": lambda: rows},
                  edit=lambda name, w: w * 2 if name.endswith("o_proj.weight") else w)
    a, b = _tensors(src), _tensors(out)
    assert torch.equal(b["model.embed_tokens.weight"], torch.from_numpy(rows))
    for k in a:
        if "embed" not in k and "lm_head" not in k:
            assert torch.equal(b[k], a[k] * 2 if k.endswith("o_proj.weight") else a[k]), k
    assert read_config(out).vocab_size == bigger.vocab_size


def test_a_bad_source_is_refused_before_anything_is_written(hf_dir, tmp_path):
    src, _ = hf_dir("llama_gqa")
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": cfg["num_hidden_layers"] + 1}))
    with pytest.raises(CheckpointError, match="missing tensors"):
        rewrite(src, tmp_path / "out", read_config(src), "float32")
    assert not (tmp_path / "out").exists()
