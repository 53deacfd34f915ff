"""Chunked logits (train.logits_chunk): the same losses and gradients as computing every position's logits at
once, and a fraction of the step's memory where the vocabulary dominates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxadapt.config import ModelConfig
from jaxadapt.model import init_model
from jaxadapt.train.loss import clm_loss, dpo_loss, sequence_logprobs
from jaxadapt.sharding import parse_mesh
from jaxadapt.train.plan import compile_plan

CFG = ModelConfig(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)


def _rows(seed: int, b: int = 3, t: int = 64) -> dict:
    r = np.random.default_rng(seed)
    segs = np.ones((b, t), np.int32)
    segs[:, 40:] = 2  # two packed documents per row
    segs[-1, 56:] = 0  # and padding
    return {"input_ids": jnp.asarray(r.integers(0, CFG.vocab_size, (b, t)), jnp.int32),
            "targets": jnp.asarray(r.integers(0, CFG.vocab_size, (b, t)), jnp.int32),
            "loss_mask": jnp.asarray((segs > 0) & (r.random((b, t)) < 0.8), jnp.float32),
            "segment_ids": jnp.asarray(segs),
            "positions": jnp.asarray(np.where(np.arange(t) < 40, np.arange(t), np.arange(t) - 40)[None].repeat(b, 0))}


def _value_and_grad(loss):
    graphdef, params = nnx.split(init_model(CFG, seed=3))

    @jax.jit
    def run(params):
        return jax.value_and_grad(lambda p: loss(nnx.merge(graphdef, p)))(params)

    value, grads = run(params)
    return float(value), jax.tree.leaves(grads)


@pytest.mark.parametrize("chunk", [8, 16, 32])
def test_chunked_clm_loss_and_gradients_equal_the_whole_sequence(chunk):
    batch = _rows(0)
    want, want_g = _value_and_grad(lambda m: clm_loss(m, batch, z_loss=1e-2)[0])
    got, got_g = _value_and_grad(lambda m: clm_loss(m, batch, z_loss=1e-2, chunk=chunk)[0])
    assert got == pytest.approx(want, rel=1e-6)
    assert len(got_g) == len(want_g) > 5
    for g, w in zip(got_g, want_g):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_chunked_dpo_equals_the_whole_sequence():
    chosen, rejected = _rows(1, b=2), _rows(2, b=2)
    batch = {**{f"chosen_{k}": v for k, v in chosen.items()}, **{f"rejected_{k}": v for k, v in rejected.items()}}
    ref = sequence_logprobs(init_model(CFG, seed=4), batch)
    np.testing.assert_allclose(sequence_logprobs(init_model(CFG, seed=4), batch, chunk=16), ref, rtol=1e-5)
    want, want_g = _value_and_grad(lambda m: dpo_loss(m, batch, ref_logps=ref, beta=0.5)[0])
    got, got_g = _value_and_grad(lambda m: dpo_loss(m, batch, ref_logps=ref, beta=0.5, chunk=16)[0])
    assert got == pytest.approx(want, rel=1e-6) and want > 0
    for g, w in zip(got_g, want_g):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


# The vocabulary dominates (a tied 32K x 64 embedding, one thin layer), as with Llama-3's 128K at scale.
WIDE_VOCAB = """model_type: llama
vocab_size: 32768
hidden_size: 64
intermediate_size: 128
num_hidden_layers: 1
num_attention_heads: 2
num_key_value_heads: 2
head_dim: 32
tie_word_embeddings: true
"""


def test_chunked_logits_shrink_the_step_memory(tmp_path):
    # Batch 4 x 256: whole, the float32 logits and their gradient are 2 x 128 MiB; in chunks of 32 positions the
    # step holds an eighth of that at a time.
    f = tmp_path / "model.yaml"
    f.write_text(WIDE_VOCAB)
    whole, chunked = (compile_plan(str(f), parse_mesh("data=1"), "full", 4, 256, logits_chunk=c) for c in (0, 32))
    assert chunked["temps"] < 0.35 * whole["temps"]  # 394 -> 106 MiB with jax 0.10.2
    assert chunked["analytic_flops_per_step"] == whole["analytic_flops_per_step"]


def test_a_runs_validation_loss_and_eval_score_rows_alike():
    """The validation loss of a training run (train/loop.evaluate: packed batches on the training engine) and
    `jaxadapt eval`'s scorer (rows sorted, padded to a power of two) sum the same log-probabilities: one function,
    train/loss.scored_logprobs."""
    from jaxadapt.eval.scorer import Scorer
    from jaxadapt.sharding import make_mesh
    from jaxadapt.train.loop import evaluate
    from jaxadapt.train.step import build_engine

    from trainhelpers import run_cfg

    mesh = make_mesh(8, 1, 1)
    engine, state = build_engine(init_model(CFG), run_cfg("full", batch=8), mesh)
    r = np.random.default_rng(3)
    b, t = 8, 32
    lengths = r.integers(5, t + 1, b)
    segs = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)  # one document per row, then padding
    batch = {"input_ids": r.integers(0, CFG.vocab_size, (b, t)).astype(np.int32),
             "targets": r.integers(0, CFG.vocab_size, (b, t)).astype(np.int32),
             "loss_mask": ((segs > 0) & (r.random((b, t)) < 0.8)).astype(np.float32), "segment_ids": segs,
             "positions": np.broadcast_to(np.arange(t), (b, t)).astype(np.int32), "num_bytes": np.full(b, 50)}
    got = evaluate(engine, state, {"nl": [batch]}, max_batches=1)

    rows = [(batch["input_ids"][i, :n], batch["targets"][i, :n], batch["loss_mask"][i, :n] > 0)
            for i, n in enumerate(lengths)]
    logp = Scorer(engine.model(state["params"]), mesh, batch_size=8).logprobs(rows, "nl")
    count = batch["loss_mask"].sum()
    assert got["eval/nl/loss"] == pytest.approx(-logp.sum() / count, rel=1e-5)
    assert got["eval/nl/bpb"] == pytest.approx(-logp.sum() / (b * 50) / np.log(2), rel=1e-5)
