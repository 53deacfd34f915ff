"""Causal self-attention through JAX's Pallas splash-attention kernel (`model.attention_impl: splash`, TPU).

Splash is a block-sparse flash attention: it never holds the [t, t] scores, and it skips the key blocks that the
static mask (causal, sliding window) rules out entirely, so a window shorter than the row costs proportionally
less. Packed documents come in as segment ids, which the kernel compares per block. Query heads share key/value
heads (GQA) inside the kernel: query head h reads key head h // (heads // kv_heads), the grouping of the model's
`grouped_attention`, and the backward sums a group's key/value gradients in place, so keys and values are never
repeated per query head.

Off a TPU the same kernel runs in Pallas interpret mode (correct, and slow: tests only).
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as sa
from jax.sharding import Mesh, PartitionSpec as P

LANES = 128  # the kernel's key blocks are multiples of the TPU's 128 lanes
BLOCKS = (512, 384, 256, 128)  # query / key block lengths, the longest that divides the padded row is taken


def padded_length(t: int) -> int:
    """t rounded up to a multiple of 128: the row length the kernel runs at (splash_attention pads to it)."""
    return -(-t // LANES) * LANES


def block_size(n: int) -> int:
    """The kernel's query and key block length for padded rows of n tokens: the longest of BLOCKS dividing n."""
    return next(b for b in BLOCKS if n % b == 0)


@lru_cache(maxsize=64)
def _kernel(t: int, heads: int, window: int | None, softcap: float | None, interpret: bool):
    """The kernel for rows of t (a multiple of 128) and `heads` query heads. Built once per static
    configuration: the mask's block map is computed in numpy here, and its arrays are made concrete (not traced), so
    the cached kernel can be used by any later trace."""
    shape = (t, t)
    # LocalMask keeps kv in [q - left, q + right]: the model's window keeps kv > q - window, i.e. left = window - 1.
    mask = sa.CausalMask(shape) if window is None else sa.LocalMask(shape, window_size=(window - 1, 0), offset=0)
    b = block_size(t)
    blocks = sa.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                           block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
    with jax.ensure_compile_time_eval():
        return sa.make_splash_mha(sa.MultiHeadMask([mask] * heads), block_sizes=blocks, head_shards=1,
                                  q_seq_shards=1, attn_logits_soft_cap=softcap, interpret=interpret)


def _fit(axes, size: int, mesh: Mesh, *more: int):
    """A PartitionSpec entry kept only where its mesh axes divide `size` (and every size in `more`), else None: a
    dimension its axes do not divide stays whole, as jaxadapt.sharding places parameters."""
    if axes is None:
        return None
    n = 1
    for a in (axes,) if isinstance(axes, str) else axes:
        n *= mesh.shape[a]
    return axes if all(s % n == 0 for s in (size, *more)) else None


def splash_attention(q, k, v, segment_ids, *, sliding_window: int | None, scale: float,
                     softcap: float | None = None, interpret: bool | None = None, mesh: Mesh | None = None,
                     spec: P | None = None):
    """Causal attention, within segments, optionally windowed and soft-capped -> [batch, t, heads, head_dim].

    q [batch, t, heads, head_dim]; k, v [batch, t, kv_heads, head_dim] (heads a multiple of kv_heads), cast to q's
    dtype; segment_ids [batch, t] int: a query attends to the keys at or before it with the same id (and, with
    `sliding_window`, fewer than that many positions back). Give padding an id of its own: then no real token
    attends to it, and every row, padding included, has at least itself to attend to. Scores are
    softcap * tanh(q.k * scale / softcap) when `softcap` is set, else q.k * scale; the softmax runs in float32 and
    the output comes back in q's dtype.

    Any t works: rows are padded at the end to a multiple of 128 (`padded_length`) and the output sliced back.
    Causality keeps every real query off the padded keys, so results and gradients are those of the unpadded rows;
    multiples of 128 skip the copy, and multiples of 512 get the longest blocks (`block_size`).

    interpret: Pallas interpret mode; None means interpret unless jax.default_backend() is "tpu".
    mesh, spec: on a mesh, the kernel (which the SPMD partitioner cannot split) runs per device under shard_map,
    with q, k, v and the output laid out as `spec` = P(batch axes, None, head axes, None); axes that do not divide
    the batch (or both head counts) are left out. Without a mesh the call is a single-device one.
    """
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"splash_attention: expected q [batch, t, heads, head_dim] and k, v [batch, t, kv_heads, "
                         f"head_dim] alike, got q {q.shape}, k {k.shape}, v {v.shape}")
    b, t, heads, _ = q.shape
    kv_heads = k.shape[2]
    if heads % kv_heads:
        raise ValueError(f"splash_attention: {heads} query heads are not a multiple of {kv_heads} key/value heads")
    if segment_ids.shape != (b, t):
        raise ValueError(f"splash_attention: segment_ids {segment_ids.shape}, expected [batch, t] = {(b, t)}")
    if sliding_window is not None and sliding_window < 1:
        raise ValueError(f"splash_attention: sliding_window={sliding_window}, expected a positive length or None")
    if softcap is not None and softcap <= 0:
        raise ValueError(f"splash_attention: softcap={softcap}, expected a positive cap or None")
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    window = None if sliding_window is None or sliding_window >= t else int(sliding_window)
    cap = None if softcap is None else float(softcap)
    # the kernel takes no scale: scaling q in float32 is the same as scaling the scores, before any soft cap
    q = (q.astype(jnp.float32) * scale).astype(q.dtype)
    k, v = k.astype(q.dtype), v.astype(q.dtype)
    segment_ids = segment_ids.astype(jnp.int32)

    def local(q, k, v, ids):
        """One device's rows and heads: [b, t, h, d] -> the kernel's [h, t, d] per row, vmapped over rows."""
        n = padded_length(t)
        if n != t:
            q, k, v = (jnp.pad(x, ((0, 0), (0, n - t), (0, 0), (0, 0))) for x in (q, k, v))
            ids = jnp.pad(ids, ((0, 0), (0, n - t)), mode="edge")
        kernel = _kernel(n, q.shape[2], window, cap, interpret)
        out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, sa.SegmentIds(s, s)))(
            *(x.swapaxes(1, 2) for x in (q, k, v)), ids)
        return out.swapaxes(1, 2)[:, :t]

    if mesh is None or spec is None:
        return local(q, k, v, segment_ids).astype(q.dtype)
    batch_axes = _fit(spec[0] if len(spec) > 0 else None, b, mesh)
    head_axes = _fit(spec[2] if len(spec) > 2 else None, heads, mesh, kv_heads)
    qkv = P(batch_axes, None, head_axes, None)
    out = jax.shard_map(local, mesh=mesh, in_specs=(qkv, qkv, qkv, P(batch_axes, None)), out_specs=qkv,
                        check_vma=False)(q, k, v, segment_ids)
    return out.astype(q.dtype)
