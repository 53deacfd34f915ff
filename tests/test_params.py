"""The parameter-spec table (jaxadapt.params): every leaf of every family has exactly one spec, and what is derived
from it (sharding rules, HF names, LoRA targets, GGUF names) agrees with the model and with the libraries it
talks to."""

import gguf
import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from tinymodels import FAMILIES, TINY

from jaxadapt.config import ModelConfig
from jaxadapt.io.hf import hf_layout, hf_shapes
from jaxadapt.model import abstract_model, init_model
from jaxadapt.params import LORA_PARENTS, LORA_TARGETS, PARAMS, ParamSpec, check_paths, specs_for
from jaxadapt.sharding import PARAM_RULES, ShardingError, logical_axes, make_mesh, path_str, tree_shardings
from jaxadapt.train.config import LoraConfig
from jaxadapt.train.lora import add_lora


def _config(name: str) -> ModelConfig:
    model_type, overrides = FAMILIES[name]
    hf = {"model_type": model_type, **TINY, **overrides}
    if model_type == "qwen3" and "head_dim" not in overrides:
        hf["head_dim"] = 128
    return ModelConfig.from_hf(hf)


def _leaves(cfg: ModelConfig, lora: bool = False) -> dict:
    if lora:
        model = init_model(cfg)
        add_lora(model, LoraConfig(rank=2))
    else:
        model = abstract_model(cfg)
    return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(nnx.state(model))[0]}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_leaf_has_one_spec_and_its_rule(name):
    cfg = _config(name)
    leaves = _leaves(cfg)
    check_paths(cfg, leaves)  # no leaf without a spec, no spec without a leaf
    specs = {s.path: s for s in specs_for(cfg)}
    for path, leaf in leaves.items():
        assert logical_axes(path) == specs[path].axes and len(specs[path].axes) == leaf.ndim, path
        if specs[path].stacked:  # the scanned layer's own view (sharding.constrain_layer)
            assert logical_axes("layers/" + path.removeprefix("model/layers/")) == specs[path].axes
    layout = hf_layout(cfg)
    assert len(layout) == len(hf_shapes(cfg))
    per_layer = sum(s.stacked for s in specs.values())
    assert len(layout) == len(specs) - per_layer + per_layer * cfg.num_hidden_layers


def test_optional_parameters_follow_the_config():
    paths = {name: {s.path for s in specs_for(_config(name))} for name in FAMILIES}
    norms = {"model/layers/self_attn/q_norm/weight", "model/layers/self_attn/k_norm/weight"}
    assert norms <= paths["qwen3"] and norms <= paths["qwen3_tied"] and not norms & paths["qwen2_bias"]
    assert "model/layers/self_attn/q_proj/bias" in paths["qwen2_bias"]
    assert "model/layers/self_attn/o_proj/bias" not in paths["qwen2_bias"]  # Qwen2: q/k/v biases only
    assert not any(p.endswith("/bias") for p in paths["qwen3"])
    sandwich = {"model/layers/pre_feedforward_layernorm/weight", "model/layers/post_feedforward_layernorm/weight"}
    assert sandwich <= paths["gemma2"] and sandwich <= paths["gemma3"] and not sandwich & paths["llama_gqa"]
    assert norms <= paths["gemma3"] and not norms & paths["gemma2"]
    assert "lm_head/kernel" not in paths["gemma2"]
    assert "model/layers/self_attn/o_proj/bias" in paths["llama_bias_head_dim"]
    assert "lm_head/kernel" in paths["qwen3"] and "lm_head/kernel" not in paths["qwen3_tied"]


def test_lora_targets_are_the_linears_and_their_factors_have_rules():
    assert LORA_TARGETS == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert LORA_PARENTS["q_proj"] == "self_attn" and LORA_PARENTS["down_proj"] == "mlp"
    assert "q_norm" not in LORA_TARGETS and "k_norm" not in LORA_TARGETS
    cfg = _config("qwen3")
    for path, leaf in _leaves(cfg, lora=True).items():
        assert len(logical_axes(path)) == leaf.ndim, path
    assert logical_axes("params/model/layers/self_attn/o_proj/lora_a") == ("layers", "heads", "rank")
    assert logical_axes("model/layers/mlp/up_proj/lora_b") == ("layers", "rank", "mlp")
    assert logical_axes("model/layers/mlp/up_proj/lora_scale") == ("layers",)


def test_qwen3_shardings_on_a_mesh():
    cfg = _config("qwen3")  # 4 heads of 24, 2 KV heads: q_dim 96, kv_dim 48
    sh = tree_shardings(nnx.state(abstract_model(cfg)), make_mesh(2, 2, 2))
    specs = {path_str(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(sh)[0]}
    assert specs["model/layers/self_attn/q_proj/kernel"] == P(None, "fsdp", "tensor")
    assert specs["model/layers/self_attn/o_proj/kernel"] == P(None, "tensor", "fsdp")
    assert specs["model/layers/self_attn/q_norm/weight"] == P(None, None)  # [layers, head_dim]: replicated
    assert specs["model/layers/self_attn/k_norm/weight"] == P(None, None)


def test_a_parameter_without_a_spec_is_an_error():
    with pytest.raises(ShardingError, match="no sharding rule for parameter 'model/layers/self_attn/v_norm/weight'"):
        logical_axes("model/layers/self_attn/v_norm/weight")
    cfg = _config("llama_gqa")
    with pytest.raises(ValueError, match=r"parameters without a spec .*\['model/extra/weight'\]"):
        check_paths(cfg, [*_leaves(cfg), "model/extra/weight"])
    with pytest.raises(ValueError, match="HF name"):
        ParamSpec("model/layers/x/weight", "model.x.weight", ("layers", "norm"))
    with pytest.raises(ValueError, match="LoRA target"):
        ParamSpec("model/layers/x/weight", "model.layers.{i}.x.weight", ("layers", "norm"), lora=True)


def test_rules_are_exact_path_suffixes():
    # q_norm/weight must not take model/norm's rule, nor the embedding's rule match a longer name.
    assert logical_axes("model/norm/weight") == ("norm",)
    assert logical_axes("model/layers/self_attn/q_norm/weight") == ("layers", "norm")
    with pytest.raises(ShardingError):
        logical_axes("model/my_embed_tokens/embedding")
    assert len(PARAM_RULES) == len({p.path for p in PARAMS}) + 3 * len(LORA_TARGETS)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma2", "gemma3"])
def test_gguf_names_are_the_gguf_packages(arch):
    """Our GGUF names are the ones the installed gguf package (llama.cpp's own table) gives each architecture."""
    key = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch]
    known = {gguf.TENSOR_NAMES[t].replace("{bid}", "{i}") for t in gguf.MODEL_TENSORS[key]}
    cfg = _config({"llama": "llama_bias_head_dim", "qwen2": "qwen2_bias"}.get(arch, arch))
    for s in specs_for(cfg):
        assert s.gguf.rsplit(".", 1)[0] in known, s.gguf
