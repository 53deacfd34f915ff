"""Model presets: each parses, and its parameter count (from shapes alone) matches the published model."""

from __future__ import annotations

import json
import math
import time

import jax
import pytest
from flax import nnx

from jaxadapt.config import ModelConfig
from jaxadapt.config.presets import list_presets, model_preset
from jaxadapt.errors import UserError
from jaxadapt.model import abstract_model

# name -> (size as published on the model card, exact count of the HF checkpoint's parameters).
# The exact count also catches details far below 0.5%, like Qwen2's q/k/v biases or a tied head.
SIZES = {
    "llama2-7b": (6.74e9, 6_738_415_616),
    "llama3-8b": (8.03e9, 8_030_261_248),
    "llama3.1-8b": (8.03e9, 8_030_261_248),
    "llama3.2-1b": (1.24e9, 1_235_814_400),
    "llama3-70b": (70.55e9, 70_553_706_496),
    "mistral-7b": (7.24e9, 7_241_732_096),
    "qwen2.5-0.5b": (0.494e9, 494_032_768),
    "qwen3-0.6b": (0.596e9, 596_049_920),  # the model card's "0.6B" (0.44B non-embedding), tied
    "qwen3-8b": (8.19e9, 8_190_735_360),  # the model card's "8.2B" (6.95B non-embedding), untied
    "smollm2-135m": (134.5e6, 134_515_008),
    "gemma2-2b": (2.61e9, 2_614_341_888),  # the model card's "2.6B"
    "gemma3-1b": (1.00e9, 999_885_952),  # the model card's "1B"
    "gemma3-4b": (3.88e9, 3_880_263_168),  # the text tower of the 4.30B checkpoint (its vision tower: 0.42B)
}


def n_params(cfg: ModelConfig) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(abstract_model(cfg))))


def test_list_presets():
    assert list_presets() == sorted(SIZES)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_preset_parameter_count(name):
    published, exact = SIZES[name]
    count = n_params(model_preset(name))
    assert abs(count - published) / published < 0.005
    assert count == exact


@pytest.mark.parametrize("name", ["qwen3-0.6b", "qwen3-8b", "gemma2-2b", "gemma3-1b", "gemma3-4b"])
def test_newer_family_preset_counts_equal_transformers(name):
    """transformers' own model built from the preset's exported config.json (on the meta device: shapes only) has
    exactly our parameters: Qwen3's q/k norms and head_dim 128 != hidden / heads, Gemma's four norms per layer and
    tied head, Gemma-3's q/k norms."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = model_preset(name)
    hf = cfg.to_hf()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**hf))
    assert type(model).__name__ == hf["architectures"][0]
    assert model.num_parameters() == n_params(cfg) == SIZES[name][1]
    if name.startswith("qwen3"):
        assert n_params(cfg) - cfg.vocab_size * cfg.hidden_size * (1 if cfg.tie_word_embeddings else 2) == (
            440_467_456 if name == "qwen3-0.6b" else 6_946_075_648)  # the card's non-embedding 0.44B / 6.95B


def test_architecture_details():
    assert model_preset("mistral-7b").sliding_window == 4096
    qwen = model_preset("qwen2.5-0.5b")
    assert qwen.attention_bias and not qwen.o_proj_bias and qwen.sliding_window is None and qwen.tie_word_embeddings
    assert model_preset("llama3.1-8b").rope_dict == {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}
    small = model_preset("llama3.2-1b")
    assert small.rope_dict["factor"] == 32.0 and small.tie_word_embeddings and small.head_dim == 64
    assert model_preset("llama2-7b").rope_scaling == () and model_preset("llama2-7b").rms_norm_eps == 1e-5
    assert model_preset("smollm2-135m").initializer_range == pytest.approx(1 / 24)
    q3 = model_preset("qwen3-0.6b")
    assert q3.qk_norm and q3.head_dim == 128 and q3.tie_word_embeddings and not q3.attention_bias
    assert q3.sliding_window is None and q3.max_position_embeddings == 40960 and q3.rope_theta == 1e6
    assert not model_preset("qwen3-8b").tie_word_embeddings
    g2 = model_preset("gemma2-2b")
    assert g2.sliding_layers == (True, False) * 13 and g2.attention_scale == 256 ** -0.5
    assert (g2.attn_logit_softcapping, g2.final_logit_softcapping, g2.hidden_act) == (50.0, 30.0, "gelu_pytorch_tanh")
    g3 = model_preset("gemma3-4b")
    assert g3.sliding_layers == ((True,) * 5 + (False,)) * 5 + (True,) * 4 and g3.sliding_window == 1024
    assert (g3.rope_theta, g3.rope_local_theta, g3.rope_dict) == (1e6, 1e4, {"rope_type": "linear", "factor": 8.0})
    assert g3.qk_norm and g3.attn_logit_softcapping is None and g3.eos_token_id == [1, 106]


def test_70b_is_abstract_and_quick():
    """Planning a 70B run must not allocate 280 GB: every leaf is a ShapeDtypeStruct, no array goes live."""
    keep = jax.numpy.zeros(1)
    live = len(jax.live_arrays())
    start = time.perf_counter()
    state = nnx.state(abstract_model(model_preset("llama3-70b")))
    assert time.perf_counter() - start < 10  # ~0.1 s in practice
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(state))
    assert len(jax.live_arrays()) == live
    del keep


def test_paths_to_files_and_dirs(tmp_path):
    cfg = model_preset("qwen2.5-0.5b")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(cfg.to_hf()))
    assert model_preset(tmp_path / "model") == cfg  # an HF model directory
    assert model_preset(str(tmp_path / "model" / "config.json")) == cfg
    (tmp_path / "mine.yaml").write_text("model_type: llama\nvocab_size: 100\nhidden_size: 64\n"
                                        "intermediate_size: 128\nnum_hidden_layers: 2\nnum_attention_heads: 4\n")
    assert model_preset(tmp_path / "mine.yaml").head_dim == 16


def test_errors(tmp_path):
    with pytest.raises(UserError, match=r"unknown model preset 'llama4'; valid presets: gemma2-2b, gemma3-1b, .*"
                                        r"smollm2-135m \(or give a path"):
        model_preset("llama4")
    with pytest.raises(UserError, match="nope.json: file not found"):
        model_preset(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="bad.json: invalid JSON"):
        model_preset(tmp_path / "bad.json")
    (tmp_path / "gpt.yaml").write_text("model_type: gpt2\n")
    with pytest.raises(UserError, match="gpt.yaml: model_type='gpt2' is not supported"):
        model_preset(tmp_path / "gpt.yaml")
