"""jaxadapt.splash against XLA's attention: the Pallas splash kernel run in interpret mode on the CPU, forward and
gradients (q, k, v) in float32, over the masks the model builds (jaxadapt.model.build_mask)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxadapt.model import build_mask
from jaxadapt.sharding import DATA, FSDP, TENSOR, make_mesh
from jaxadapt.splash import block_size, padded_length, splash_attention

ATOL = 2e-5  # float32; the kernel's blockwise (online) softmax sums in another order than XLA's


def inputs(b, t, heads, kv_heads, d=32, segments=1, seed=0, q_scale=1.0):
    """Random q, k, v, an upstream gradient w, and segment ids [b, t] cutting each row into `segments` documents
    (ids from 1, different cuts per row)."""
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((b, t, heads, d)) * q_scale, jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((b, t, kv_heads, d)), jnp.float32) for _ in range(2))
    w = jnp.asarray(rng.standard_normal((b, t, heads, d)), jnp.float32)
    cuts = [np.sort(rng.choice(np.arange(1, t), segments - 1, replace=False)) for _ in range(b)]
    seg = jnp.asarray(np.stack([1 + np.searchsorted(c, np.arange(t), side="right") for c in cuts]), jnp.int32)
    return q, k, v, w, seg


def xla_reference(mask, scale):
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale)


def capped_reference(mask, scale, cap):
    """scores * scale -> cap * tanh(s / cap) -> mask -> float32 softmax, key/value heads shared by groups of query
    heads (query head h reads key head h // group, as jax.nn.dot_product_attention does)."""

    def attend(q, k, v):
        group = q.shape[2] // k.shape[2]
        k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
        s = jnp.where(mask, cap * jnp.tanh(s / cap), jnp.finfo(jnp.float32).min)
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)

    return attend


def out_and_grads(attend, q, k, v, w, rows=None):
    """(output, d/dq, d/dk, d/dv) of sum(output * w) over the query rows `rows` [b, t] (all if None), one jit."""
    weight = w if rows is None else w * rows[:, :, None, None]

    def run(q, k, v):
        out, vjp = jax.vjp(attend, q, k, v)
        return (out, *vjp(weight))

    return jax.jit(run)(q, k, v)


def assert_close(got, want, rows=None):
    out, *grads = got
    ref, *ref_grads = want
    if rows is not None:  # padding queries' outputs differ (no valid key in XLA's mask) and are never used
        out, ref = out[rows], ref[rows]
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)
    for name, g, r in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=ATOL, rtol=0, err_msg=f"d/d{name}")


@pytest.mark.parametrize("b,t,heads,kv_heads,segments,window", [
    (1, 256, 2, 2, 1, None),  # causal only, one query head per key head
    (2, 256, 4, 2, 3, None),  # packed documents, GQA
    # window shorter than the row, three 512-blocks: some key blocks partly in the window, some skipped
    (1, 1536, 4, 2, 3, 100),
])
def test_matches_xla_attention(b, t, heads, kv_heads, segments, window):
    q, k, v, w, seg = inputs(b, t, heads, kv_heads, segments=segments)
    scale = q.shape[-1] ** -0.5
    mask = build_mask(jnp.ones((b, t), bool), jnp.arange(t), window, seg)
    got = out_and_grads(lambda *a: splash_attention(*a, seg, sliding_window=window, scale=scale), q, k, v, w)
    assert_close(got, out_and_grads(xla_reference(mask, scale), q, k, v, w))


def test_padding_and_a_length_off_the_block_grid():
    """t = 600 runs padded to 640 inside, in five blocks of 128; right-padding (key_valid False) maps to a segment id
    of its own, -1, and real queries then match XLA's mask with the same key_valid."""
    b, t, window = 2, 600, 48
    assert padded_length(t) == 640 and block_size(640) == 128
    q, k, v, w, seg = inputs(b, t, 4, 2, segments=3, seed=1)
    key_valid = jnp.arange(t)[None, :] < jnp.asarray([[t], [450]])
    scale = 0.2
    mask = build_mask(key_valid, jnp.arange(t), window, seg)
    ids = jnp.where(key_valid, seg, -1)
    got = out_and_grads(lambda *a: splash_attention(*a, ids, sliding_window=window, scale=scale), q, k, v, w,
                        key_valid)
    assert_close(got, out_and_grads(xla_reference(mask, scale), q, k, v, w, key_valid), np.asarray(key_valid))


def test_soft_capped_scores():
    """Gemma-2's attention soft cap, after the scale and before the mask; scores large enough that the cap bites."""
    b, t, window, cap, scale = 2, 256, 64, 5.0, 0.25
    q, k, v, w, seg = inputs(b, t, 4, 2, segments=2, seed=2, q_scale=4.0)
    mask = build_mask(jnp.ones((b, t), bool), jnp.arange(t), window, seg)
    want = out_and_grads(capped_reference(mask, scale, cap), q, k, v, w)
    uncapped = xla_reference(mask, scale)(q, k, v)
    assert float(jnp.abs(want[0] - uncapped).max()) > 0.1  # the cap changes the result
    got = out_and_grads(lambda *a: splash_attention(*a, seg, sliding_window=window, scale=scale, softcap=cap),
                        q, k, v, w)
    assert_close(got, want)


def test_bfloat16_comes_back_in_bfloat16():
    b, t = 1, 256
    q, k, v, _, seg = inputs(b, t, 4, 2, segments=2, seed=3)
    mask = build_mask(jnp.ones((b, t), bool), jnp.arange(t), None, seg)
    out = jax.jit(lambda *a: splash_attention(*a, seg, sliding_window=None, scale=0.125))(
        *(x.astype(jnp.bfloat16) for x in (q, k, v)))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), xla_reference(mask, 0.125)(q, k, v), atol=3e-2, rtol=0)


def test_on_a_mesh_each_device_runs_its_rows_and_heads():
    """Under shard_map on data=2, fsdp=2, tensor=2: rows split four ways, query and key heads two ways (each device
    holds whole GQA groups). Same results as XLA on the whole arrays."""
    mesh = make_mesh(2, 2, 2, devices=jax.devices()[:8])
    spec = P((DATA, FSDP), None, TENSOR, None)
    b, t = 4, 256
    q, k, v, w, seg = inputs(b, t, 4, 2, segments=2, seed=4)
    scale = q.shape[-1] ** -0.5
    mask = build_mask(jnp.ones((b, t), bool), jnp.arange(t), 64, seg)
    put = lambda x: jax.device_put(x, NamedSharding(mesh, spec))  # noqa: E731
    ids = jax.device_put(seg, NamedSharding(mesh, P((DATA, FSDP), None)))
    got = out_and_grads(lambda *a: splash_attention(*a, ids, sliding_window=64, scale=scale, mesh=mesh, spec=spec),
                        put(q), put(k), put(v), put(w))
    assert got[0].sharding.spec == spec
    assert_close(got, out_and_grads(xla_reference(mask, scale), q, k, v, w))


@pytest.mark.parametrize("q_shape,kv_shape,ids_shape,window,match", [
    ((1, 256, 4, 8), (1, 256, 3, 8), (1, 256), None, "not a multiple of 3"),
    ((1, 256, 4, 8), (1, 128, 2, 8), (1, 256), None, "k, v"),
    ((1, 256, 4, 8), (1, 256, 2, 8), (1, 255), None, "segment_ids"),
    ((1, 256, 4, 8), (1, 256, 2, 8), (1, 256), 0, "sliding_window=0"),
])
def test_bad_shapes_are_named(q_shape, kv_shape, ids_shape, window, match):
    k = jnp.zeros(kv_shape)
    with pytest.raises(ValueError, match=match):
        splash_attention(jnp.zeros(q_shape), k, k, jnp.zeros(ids_shape, jnp.int32), sliding_window=window, scale=1.0)
