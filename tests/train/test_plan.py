"""`jaxadapt plan`: the real train step compiled from abstract arrays on a simulated mesh."""

import pytest

from jaxadapt.cli import main
from jaxadapt.errors import UserError
from jaxadapt.sharding import parse_mesh
from jaxadapt.train.plan import compile_plan, plan_command

TINY = """model_type: llama
vocab_size: 512
hidden_size: 64
intermediate_size: 128
num_hidden_layers: 2
num_attention_heads: 4
num_key_value_heads: 2
head_dim: 16
"""


@pytest.fixture
def tiny(tmp_path):
    f = tmp_path / "tiny.yaml"
    f.write_text(TINY)
    return str(f)


def test_fsdp_holds_less_per_device_than_data_parallel(tiny):
    # In-process on the 8 devices of tests/conftest.py: the same function the subprocess runs.
    data = compile_plan(tiny, parse_mesh("data=8"), "full", 8, 32)
    fsdp = compile_plan(tiny, parse_mesh("fsdp=8"), "full", 8, 32)
    assert fsdp["arguments"] < data["arguments"] / 3
    assert data["total"] >= data["arguments"] and data["analytic_flops_per_step"] == fsdp["analytic_flops_per_step"]


# Weights dominate (12 layers, a small vocabulary, short sequences): what FSDP should divide by the device count.
DEEP = """model_type: llama
vocab_size: 256
hidden_size: 256
intermediate_size: 768
num_hidden_layers: 12
num_attention_heads: 4
num_key_value_heads: 2
head_dim: 64
"""


def _full_plans_at_fsdp_1_and_8(tmp_path, model_yaml: str) -> tuple[dict, dict]:
    """compile_plan of full fine-tuning, batch 8 x 16, on meshes fsdp=1 and fsdp=8."""
    f = tmp_path / "model.yaml"
    f.write_text(model_yaml)
    return tuple(compile_plan(str(f), parse_mesh(mesh), "full", 8, 16) for mesh in ("fsdp=1", "fsdp=8"))


def test_fsdp_gathers_one_layer_at_a_time(tmp_path):
    # Gathering the whole [layers, ...] stack before the scan (and keeping every gathered layer for the backward)
    # held about the full weights per device at fsdp=8: temps ~0.43x and arguments+temps ~0.26x of fsdp=1's.
    # One layer at a time, the fsdp=8 device holds its 1/8 share plus a layer or two: ~0.19x and ~0.15x.
    one, eight = _full_plans_at_fsdp_1_and_8(tmp_path, DEEP)
    assert eight["temps"] < 0.3 * one["temps"]
    assert eight["arguments"] + eight["temps"] < 0.2 * (one["arguments"] + one["temps"])


# The vocabulary dominates (a tied 32K x 128 embedding, one thin layer): what a vocabulary-parallel LM head divides.
WIDE_VOCAB = """model_type: llama
vocab_size: 32768
hidden_size: 128
intermediate_size: 256
num_hidden_layers: 1
num_attention_heads: 2
num_key_value_heads: 2
head_dim: 64
tie_word_embeddings: true
"""


def test_fsdp_never_gathers_the_lm_head(tmp_path):
    # Gathering the tied head for the logits (and its full-size gradient) left fsdp=8 at ~0.74x of fsdp=1's temps;
    # split over the vocabulary, each device holds 1/8 of the head, its gradient and the logits: ~0.18x.
    one, eight = _full_plans_at_fsdp_1_and_8(tmp_path, WIDE_VOCAB)
    assert eight["temps"] < 0.3 * one["temps"]


def test_chunked_attention_shrinks_a_long_sequence_step(tiny):
    # Batch 4 x 1024 on a narrow model: the [batch, heads, 1024, 1024] float32 attention weights dominate (523 MiB
    # of temps); 128 queries at a time, recomputed in the backward: 98 MiB (jax 0.10.2).
    whole, chunked = (compile_plan(tiny, parse_mesh("data=1"), "full", 4, 1024, attention_chunk=c) for c in (0, 128))
    assert chunked["temps"] < 0.3 * whole["temps"]
    assert chunked["analytic_flops_per_step"] == whole["analytic_flops_per_step"]
    assert (whole["attention_chunk"], chunked["attention_chunk"]) == (0, 128)


def test_plan_sizes_the_attention_chunk_by_default(tiny):
    # "auto", as train resolves it: 8 rows x 4096 of the tiny model's 4 heads make 2 GiB of scores per layer.
    assert compile_plan(tiny, parse_mesh("data=1"), "full", 8, 4096)["attention_chunk"] == 2048


def test_mixed_precision_plan_keeps_a_float32_state(tiny):
    """--dtype float32 --compute-dtype bfloat16 (the accelerator default): the state is float32's, the parameters and
    AdamW moments of --dtype bfloat16 take half of it."""
    mixed = compile_plan(tiny, parse_mesh("data=1"), "full", 4, 32, "float32", compute_dtype="bfloat16")
    f32, bf16 = (compile_plan(tiny, parse_mesh("data=1"), "full", 4, 32, dtype) for dtype in ("float32", "bfloat16"))
    assert mixed["arguments"] == f32["arguments"] and bf16["arguments"] < 0.6 * f32["arguments"]


def test_lora_plan_keeps_the_base_model_frozen(tiny):
    lora = compile_plan(tiny, parse_mesh("fsdp=8"), "lora", 8, 32)
    full = compile_plan(tiny, parse_mesh("fsdp=8"), "full", 8, 32)
    assert lora["trainable_params"] < full["trainable_params"] / 4 and lora["frozen_params"] >= full["trainable_params"]
    assert lora["analytic_flops_per_step"] < full["analytic_flops_per_step"]


def test_cli_plans_llama3_8b_lora_in_a_subprocess(capsys):
    # The command re-executes itself with 8 simulated devices (the 8B compile takes ~20 s on CPU).
    assert main(["plan", "llama3-8b", "--mesh", "fsdp=8", "--trainable", "lora", "--batch", "8", "--seq", "128",
                 "--dtype", "bfloat16", "--device", "h100"]) == 0
    out = capsys.readouterr().out
    assert "8 devices" in out and "of 80 GiB (h100): fits" in out and "arguments" in out and "FLOPs" in out
    assert "XLA on CPU keeps bfloat16 activations in float32" in out


@pytest.mark.parametrize("mesh", ["data=8,fsdp", "data=2,pipeline=4", "data=0", "data=2,data=4", "8"])
def test_malformed_mesh_is_a_user_error(mesh):
    with pytest.raises(UserError, match="--mesh"):
        parse_mesh(mesh)


def test_bad_input_fails_before_compiling(tiny, capsys):
    with pytest.raises(UserError, match="unknown part"):
        plan_command(tiny, "data=8", "everything", 8, 32, "float32", "none", "tpu-v5e", None)
    with pytest.raises(UserError, match="new_rows"):
        plan_command(tiny, "data=8", "new_rows", 8, 32, "float32", "none", "tpu-v5e", None)
    assert main(["plan", tiny, "--mesh", "fsdp=8,bogus=2"]) == 2
    assert "--mesh" in capsys.readouterr().err
    assert main(["plan", tiny, "--seq", "100", "--attention-chunk", "64"]) == 2
    assert "--attention-chunk=64: expected 0 (no chunking) or a divisor of --seq=100" in capsys.readouterr().err
    with pytest.raises(UserError, match="--compute-dtype 'float16'"):
        plan_command(tiny, "data=1", "full", 8, 32, "float32", "none", "tpu-v5e", None, compute_dtype="float16")
    with pytest.raises(UserError, match="--logits-chunk=-1"):
        plan_command(tiny, "data=1", "full", 8, 32, "float32", "none", "tpu-v5e", None, logits_chunk=-1)


def test_batch_not_dividing_the_mesh_is_reported_from_the_subprocess(tiny):
    with pytest.raises(UserError, match="not divisible by the data-parallel size"):
        plan_command(tiny, "data=4", "full", 6, 32, "float32", "none", "tpu-v5e", None)


QWEN3 = TINY.replace("llama", "qwen3").replace("head_dim: 16", "head_dim: 32") + "tie_word_embeddings: true\n"


def test_qwen3_plans_on_an_fsdp_and_tensor_mesh(tmp_path):
    """Qwen3 (q/k norms, head_dim 32 != 64 / 4) through the sharding rules of the spec table, FSDP x tensor."""
    f = tmp_path / "qwen3.yaml"
    f.write_text(QWEN3)
    plan = compile_plan(str(f), parse_mesh("fsdp=4,tensor=2"), "lora", 8, 32)
    # frozen: embeddings + 2 x (q, k, v, o, MLP, 2 norms + q/k norms of head_dim) + the final norm, and the LoRA
    # scales (7 targets x 2 layers); trained: the rank-8 factors of the 7 Linears (not of the q/k norms)
    base = 512 * 64 + 2 * (64 * 128 * 2 + 64 * 64 * 2 + 3 * 64 * 128 + 2 * 64 + 2 * 32) + 64
    assert plan["frozen_params"] == base + 7 * 2
    linears = [(64, 128), (64, 64), (64, 64), (128, 64), (64, 128), (64, 128), (128, 64)]  # (in, out)
    assert plan["trainable_params"] == 2 * 8 * sum(i + o for i, o in linears)
    assert plan["devices"] == 8 and plan["arguments"] > 0


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_gemma_plans_on_an_fsdp_and_tensor_mesh(tmp_path, model_type):
    """Gemma's extra norms (pre/post feed-forward, Gemma-3's q/k norms) take the spec table's rules on FSDP x tensor,
    and a full-training step with mixed sliding/full layers and soft caps compiles there."""
    f = tmp_path / "gemma.yaml"
    f.write_text(TINY.replace("llama", model_type) + "sliding_window: 8\n")
    plan = compile_plan(str(f), parse_mesh("fsdp=4,tensor=2"), "full", 8, 32)
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128 + 4 * 64 + (2 * 16 if model_type == "gemma3_text" else 0)
    assert plan["trainable_params"] == 512 * 64 + 2 * per_layer + 64  # tied: no head of its own
    assert plan["devices"] == 8 and plan["arguments"] > 0
