"""The train step on 8 simulated CPU devices: shardings, mesh-independence, LoRA, new_rows, accumulation."""

import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxadapt.data import DataConfig, SourceConfig
from jaxadapt.errors import UserError
from jaxadapt.io.hf import load_pretrained, save_pretrained
from jaxadapt.model import init_model
from jaxadapt.sharding import make_mesh, path_str
from jaxadapt.train.config import CheckpointConfig, LoggingConfig, LoraConfig, ModelSection, TrainConfig, validate
from jaxadapt.train.lora import add_lora, merge_lora, save_peft_adapter
from jaxadapt.train.step import build_engine, check_batch_divides, shard_batch

from trainhelpers import CFG, batch, run_cfg

def losses(rc, mesh_shape, model=None, steps=5, devices=None):
    """Losses of `steps` optimizer steps on one fixed batch (so the loss must fall)."""
    model = model or init_model(CFG)
    if rc.train.trainable.lora:
        add_lora(model, rc.lora)
    engine, state = build_engine(model, rc, make_mesh(*mesh_shape, devices=devices), old_vocab=100)
    out = []
    for _ in range(steps):
        state, m = engine.step(state, shard_batch(batch(b=rc.train.batch_size), engine, rc.train.grad_accum))
        out.append(float(m["loss"]))
    return out, engine, state


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1), (2, 2, 2)])
def test_every_leaf_has_the_expected_partition_spec(mesh_shape):
    model = init_model(CFG)
    add_lora(model, LoraConfig(rank=4))
    engine, state = build_engine(model, run_cfg("lora+embeddings"), make_mesh(*mesh_shape))
    data, fsdp, tensor = mesh_shape
    f = "fsdp" if fsdp > 1 else None
    tp = "tensor" if tensor > 1 else None
    specs = {path_str(p): x.sharding.spec for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert specs["params/model/embed_tokens/embedding"] == P(tp, f)
    assert specs["params/lm_head/kernel"] == P(f, tp)
    assert specs["params/model/layers/self_attn/q_proj/lora_a"] == P(None, f, None)
    assert specs["params/model/layers/mlp/down_proj/lora_a"] == P(None, tp, None)
    assert specs["params/model/layers/mlp/down_proj/lora_b"] == P(None, None, f)
    # Adam moments are sharded exactly like their parameters.
    for path, spec in specs.items():
        if "/mu/" in path or "/nu/" in path:
            assert spec == specs["params/" + path.split("/mu/" if "/mu/" in path else "/nu/")[1]], path
    frozen = {path_str(p): x.sharding.spec for p, x in jax.tree_util.tree_flatten_with_path(engine.frozen)[0]}
    assert frozen["model/model/layers/mlp/gate_proj/kernel"] == P(None, f, tp)
    assert frozen["model/model/layers/self_attn/o_proj/kernel"] == P(None, tp, f)
    # Frozen parameters have no optimizer state.
    assert not any("gate_proj/kernel" in p for p in specs)


def test_unmatched_parameter_is_an_error():
    from jaxadapt.sharding import ShardingError, tree_shardings

    with pytest.raises(ShardingError, match="no sharding rule for parameter 'model/extra/weight'"):
        tree_shardings({"model": {"extra": {"weight": jnp.zeros((4, 4))}}}, make_mesh())


@pytest.mark.parametrize("trainable", ["full", "lora+embeddings"])
def test_sharded_losses_match_a_single_device(trainable):
    rc = run_cfg(trainable)
    single, _, _ = losses(rc, (1, 1, 1), devices=jax.devices()[:1])
    for mesh_shape in [(8, 1, 1), (2, 2, 2)]:
        sharded, _, _ = losses(rc, mesh_shape)
        np.testing.assert_allclose(sharded, single, atol=1e-5, rtol=0)
    assert single[-1] < single[0] - 0.1


def test_gradient_accumulation_equals_the_full_batch():
    """4 micro-batches of 8 give the loss and the parameters of one batch of 32."""
    accumulated, _, s4 = losses(run_cfg("full", batch=32, accum=4), (8, 1, 1), steps=3)
    whole, _, s1 = losses(run_cfg("full", batch=32, accum=1), (8, 1, 1), steps=3)
    np.testing.assert_allclose(accumulated, whole, atol=1e-5, rtol=0)
    for a, b in zip(jax.tree.leaves(s4["params"]), jax.tree.leaves(s1["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_new_rows_leave_old_rows_bit_identical():
    rc = run_cfg("new_rows")
    model = init_model(CFG)
    before_emb = np.asarray(model.model.embed_tokens.embedding[...])
    before_head = np.asarray(model.lm_head.kernel[...])
    _, engine, state = losses(rc, (2, 2, 2), model=model)
    emb = np.asarray(state["params"]["model"]["embed_tokens"]["embedding"])
    head = np.asarray(state["params"]["lm_head"]["kernel"])
    assert np.array_equal(emb[:100], before_emb[:100]) and np.array_equal(head[:, :100], before_head[:, :100])
    assert not np.allclose(emb[100:], before_emb[100:]) and not np.allclose(head[:, 100:], before_head[:, 100:])
    assert set(state["params"]) == {"model", "lm_head"} and set(state["params"]["model"]) == {"embed_tokens"}


def test_only_trainable_leaves_change_and_lora_starts_as_the_base_model():
    rc = run_cfg("lora")
    model = init_model(CFG)
    ids = jnp.asarray(batch()["input_ids"])
    base_logits = np.asarray(model(ids))
    frozen_before = {path_str(p): np.asarray(x) for p, x in
                     jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))[0]}
    add_lora(model, rc.lora)
    assert np.array_equal(np.asarray(model(ids)), base_logits)  # B = 0
    _, engine, state = losses(rc, (8, 1, 1), model=model)
    frozen_after = {path_str(p): np.asarray(x) for p, x in
                    jax.tree_util.tree_flatten_with_path(engine.frozen["model"])[0]}
    for path, value in frozen_before.items():
        assert np.array_equal(frozen_after[path], value), path
    trained = engine.model(state["params"])
    assert not np.allclose(np.asarray(trained(ids)), base_logits)


@pytest.mark.parametrize("family", ["llama_gqa", "qwen3", "gemma2", "gemma3"])
def test_lora_merge_and_peft_export_match(family, tmp_path, hf_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    src, _ = hf_dir(family)
    rc = dataclasses.replace(run_cfg("lora+embeddings"),
                             lora=LoraConfig(rank=4, alpha=8, layers=(0, -1), targets=("q_proj", "v_proj", "down_proj")))
    model = load_pretrained(src)
    add_lora(model, rc.lora)
    engine, state = build_engine(model, rc, make_mesh(8, 1, 1))
    for i in range(3):
        state, _ = engine.step(state, shard_batch(batch(seed=i, vocab=300), engine, 1))
    trained = engine.model(state["params"])
    ids = np.random.default_rng(9).integers(0, 300, (2, 256))
    unmerged = np.asarray(jax.jit(lambda m, i: m(i))(trained, jnp.asarray(ids)))

    save_peft_adapter(trained, rc.lora, tmp_path / "adapter", embeddings=True)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(src), tmp_path / "adapter").eval()
    with torch.no_grad():
        via_peft = peft_model(torch.tensor(ids)).logits.numpy()
    assert np.abs(via_peft - unmerged).max() <= 1e-4

    merge_lora(trained)
    merged = np.asarray(jax.jit(lambda m, i: m(i))(trained, jnp.asarray(ids)))
    assert np.abs(merged - unmerged).max() <= 1e-4
    out = save_pretrained(trained, tmp_path / "merged")
    with torch.no_grad():
        via_hf = AutoModelForCausalLM.from_pretrained(out)(torch.tensor(ids)).logits.numpy()
    assert np.abs(via_hf - unmerged).max() <= 1e-4


@pytest.mark.parametrize("family, trainable", [("qwen3", "full"), ("gemma2", "full"), ("gemma3", "full"),
                                              ("qwen3", "embeddings"), ("gemma2", "embeddings"),
                                              ("gemma3", "embeddings")])
def test_full_and_embeddings_training_export_to_transformers(family, trainable, tmp_path, hf_dir):
    """A few steps of full or embeddings-only training of each newer family on packed rows, then the exported HF dir
    gives transformers our trained logits: what training changed (every weight, or the shared embedding / head of a
    tied Gemma, scaled on input only) round-trips."""
    from transformers import AutoModelForCausalLM

    src, ref = hf_dir(family)
    model = load_pretrained(src)
    engine, state = build_engine(model, run_cfg(trainable), make_mesh(8, 1, 1))
    for i in range(3):
        state, _ = engine.step(state, shard_batch(batch(seed=i, vocab=300), engine, 1))
    trained = engine.model(state["params"])
    ids = np.random.default_rng(9).integers(0, 300, (2, 256))
    ours = np.asarray(jax.jit(lambda m, i: m(i))(trained, jnp.asarray(ids)))
    with torch.no_grad():
        before = ref(torch.tensor(ids)).logits.numpy()
        after = AutoModelForCausalLM.from_pretrained(save_pretrained(trained, tmp_path / "out"))(
            torch.tensor(ids)).logits.numpy()
    assert np.abs(ours - before).max() > 1e-2  # training moved the model
    assert np.abs(after - ours).max() <= 1e-4


@pytest.mark.parametrize("change, message", [
    (dict(train=TrainConfig(batch_size=10, grad_accum=4)), "batch_size=10 is not divisible by train.grad_accum=4"),
    (dict(lora=LoraConfig(targets=("q_proj", "qkv"))), "unknown module(s) ['qkv']"),
    (dict(train=TrainConfig(seq_len=1000, logits_chunk=64)),
     "train.logits_chunk=64: expected 0 (no chunking) or a divisor of train.seq_len=1000"),
    (dict(model=ModelSection(path="x", attention_chunk=48)),
     "model.attention_chunk=48: expected 0 (no chunking) or a divisor of train.seq_len=1024"),
    (dict(train=TrainConfig(objective="dpo"), data=DataConfig(sources=(SourceConfig("x", ("x.jsonl",)),))),
     "train.objective='dpo' needs data.task='dpo', got data.task='pretrain'"),
    (dict(lora=LoraConfig(rank=0)), "lora.rank=0: expected a positive integer"),
    (dict(train=TrainConfig(log_every=0)), "train.log_every=0: expected a positive integer"),
    (dict(train=TrainConfig(eval_every=-1)), "train.eval_every=-1: expected 0"),
    (dict(checkpoint=CheckpointConfig(every=0)), "checkpoint.every=0: expected a positive integer"),
    (dict(checkpoint=CheckpointConfig(keep=0)), "checkpoint.keep=0: expected at least 1"),
])
def test_bad_config_values_fail_before_compiling(change, message):
    with pytest.raises(UserError) as e:
        validate(dataclasses.replace(run_cfg(), **change))
    assert message in str(e.value)


def test_wandb_logging_without_wandb_installed_fails_before_loading(monkeypatch):
    real = importlib.util.find_spec  # an environment without the extra, whether or not this one has wandb
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"logging.wandb_project='p': wandb is not installed; install the extra "
                                        r"\(pip install -e '\.\[wandb\]'\)"):
        validate(dataclasses.replace(run_cfg(), logging=LoggingConfig(wandb_project="p")))


def test_batch_must_divide_the_data_axes():
    with pytest.raises(UserError, match="not divisible by the data-parallel size data\\*fsdp=8"):
        check_batch_divides(run_cfg(batch=12), make_mesh(8, 1, 1))
    from jaxadapt.sharding import ShardingError

    with pytest.raises(ShardingError, match="8 devices are not divisible by 3"):
        make_mesh(-1, 3, 1)


def test_dpo_starts_at_log2_and_learns_the_preference():
    """Policy == reference at step 0, so every pair's loss is -log sigmoid(0) = ln 2; training lowers it."""
    rc = dataclasses.replace(run_cfg("full"), train=TrainConfig(trainable="full", objective="dpo", steps=5,
                                                                 batch_size=8, dpo_beta=0.5))
    chosen, rejected = batch(b=8, seed=1), batch(b=8, seed=2)
    pairs = {**{"chosen_" + k: v for k, v in chosen.items()}, **{"rejected_" + k: v for k, v in rejected.items()}}
    engine, state = build_engine(init_model(CFG), rc, make_mesh(8, 1, 1))
    seen = []
    for _ in range(5):
        state, m = engine.step(state, shard_batch(pairs, engine, 1))
        seen.append(float(m["loss"]))
    assert abs(seen[0] - np.log(2)) < 1e-6
    assert seen[-1] < seen[0] - 0.05 and float(m["reward_acc"]) == 1.0


def test_new_rows_reads_adaptation_json_and_refuses_a_replaced_vocabulary(tmp_path):
    from jaxadapt.train.partition import old_vocab_size

    (tmp_path / "adaptation.json").write_text('{"old_vocab_size": 100, "prefix_preserved": true}')
    assert old_vocab_size(tmp_path, None) == 100 and old_vocab_size(tmp_path, 90) == 90
    (tmp_path / "adaptation.json").write_text('{"old_vocab_size": 100, "prefix_preserved": false}')
    with pytest.raises(UserError, match="was replaced, not extended"):
        old_vocab_size(tmp_path, None)
    with pytest.raises(UserError, match="does not exist"):
        old_vocab_size(tmp_path / "nowhere", None)
