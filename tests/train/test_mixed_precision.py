"""The mixed-precision policy (jaxadapt/train/step.py): float32 parameters, gradients and AdamW moments, bfloat16
matmuls, float32 logits and loss. One training step of a tiny model computing in bfloat16 against the same step in
float32, same parameters and batch.

Tolerances, measured over seeds 0-4 of this model and batch (jax 0.10, CPU): the bfloat16 loss was within 8.7e-5 of
float32's (of ~4.85) and each gradient leaf within 0.5-2.2% relative L2 (the norm gains worst: their gradient sums
bfloat16 products over every position). The bounds leave ~10x and ~3x margin; every leaf must also differ by at least
0.1%, which float32 compute (identical, difference 0) cannot pass: the bfloat16 path really ran."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxadapt.model import Runtime, init_model
from jaxadapt.sharding import make_mesh
from jaxadapt.train.loss import clm_loss
from jaxadapt.train.step import build_engine, shard_batch

from trainhelpers import CFG, batch, run_cfg

LOSS_ATOL = 1e-3
GRAD_RTOL = 0.06  # relative L2 error of each gradient leaf
GRAD_MIN_DIFF = 1e-3


def _loss_and_grads(compute_dtype: str):
    """Mean next-token loss and its gradient per parameter (the train step's objective), float32 parameters."""
    model = init_model(CFG, Runtime(param_dtype="float32", compute_dtype=compute_dtype))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    data = {k: jnp.asarray(v) for k, v in batch(8).items()}

    def loss(p):
        total, n, _ = clm_loss(nnx.merge(graphdef, p, rest), data)
        return total / n

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return value, {"/".join(map(str, p)): g for p, g in nnx.to_flat_state(grads)}


@pytest.fixture(scope="module")
def results():
    return {dtype: _loss_and_grads(dtype) for dtype in ("float32", "bfloat16")}


def test_bf16_loss_and_gradients_stay_within_tolerance_of_float32(results):
    (loss32, g32), (loss16, g16) = results["float32"], results["bfloat16"]
    assert loss16.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in g16.values())
    assert 0 < abs(float(loss16) - float(loss32)) < LOSS_ATOL
    rel = {k: float(np.linalg.norm(g16[k] - g32[k]) / np.linalg.norm(g32[k])) for k in g32}
    assert len(rel) == len(jax.tree.leaves(g32)) > 5
    assert max(rel.values()) < GRAD_RTOL, rel
    assert min(rel.values()) > GRAD_MIN_DIFF, rel


def test_bf16_step_keeps_float32_state_logits_and_loss(results):
    """The real train step under bfloat16 compute: its loss (taken before the update) is the float32 loss within
    tolerance, and the updated parameters and AdamW moments stay float32."""
    rc = run_cfg("full", batch=8)
    rc = dataclasses.replace(rc, model=dataclasses.replace(rc.model, compute_dtype="bfloat16"))
    model = init_model(CFG, Runtime(param_dtype="float32", compute_dtype="bfloat16"))
    logits = model(jnp.asarray(batch(2)["input_ids"]))
    assert logits.dtype == jnp.float32
    engine, state = build_engine(model, rc, make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    state, metrics = engine.step(state, shard_batch(batch(8), engine, 1))
    assert metrics["loss"].dtype == jnp.float32
    assert abs(float(metrics["loss"]) - float(results["float32"][0])) < LOSS_ATOL
    trees = (state["params"], state["opt_state"])
    floats = [x for x in jax.tree.leaves(trees) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert len(floats) == 3 * len(jax.tree.leaves(state["params"]))  # params, Adam's mu and nu
    assert {x.dtype for x in floats} == {jnp.dtype(jnp.float32)}


def _dot_operand_dtypes(jaxpr, out):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _dot_operand_dtypes(inner, out)
    return out


def test_every_matmul_of_the_bf16_step_takes_a_bf16_operand():
    """Forward and backward: no float32 x float32 product (the attention backward multiplies the float32 score
    gradient by bfloat16 keys/queries, which XLA's attention does by design)."""
    model = init_model(CFG, Runtime(compute_dtype="bfloat16"))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    data = {k: jnp.asarray(v) for k, v in batch(8).items()}
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: clm_loss(nnx.merge(graphdef, p, rest), data)[0]))(params)
    dots = _dot_operand_dtypes(jaxpr.jaxpr, [])
    assert len(dots) > 20
    assert all("bfloat16" in d for d in dots), [d for d in dots if "bfloat16" not in d]
    assert sum(d == ("bfloat16", "bfloat16") for d in dots) > 0.8 * len(dots)
