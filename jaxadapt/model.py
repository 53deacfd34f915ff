"""The Llama-family decoder (Llama-2/3, Mistral, Qwen2, Qwen3, Gemma-2/3, SmolLM2) in Flax NNX.

Module and parameter names mirror HF's (`model.layers.self_attn.q_proj`, `embed_tokens`, `lm_head`), so HF
conversion is a transpose of each Linear weight plus stacking the layers; every parameter this module creates has a
spec in jaxadapt.params (HF name and layout, sharding, LoRA, GGUF name). Differences from HF on purpose:
- Linear kernels are `[in, out]` (HF stores `[out, in]`).
- The decoder layers are one stacked module (a leading `layers` axis on every parameter) run with
  `jax.lax.scan`: compile time does not grow with depth, and remat applies per layer. Under an FSDP train step
  (`jaxadapt.sharding.param_mesh`) each layer is gathered inside the scan, one at a time, and gathered again in the
  backward instead of being kept (`constrain_layer`, `recompute_gathered`), and the LM head is split over the
  vocabulary (`vocab_parallel`).
- Attention takes `segment_ids` (packed documents never attend to each other) and `positions` (RoPE restarts
  per document), on top of the causal mask, the key padding mask and the optional sliding window.
- Layers of two kinds (Gemma: sliding and full attention, with their own RoPE bases in Gemma-3) share the scan: each
  kind's mask and cos/sin are built once and every layer selects its own (`LlamaModel.layer_inputs`).
RoPE uses HF's rotate-half layout with cos/sin computed in float32, like HF.

Generation runs the same layers through `LlamaForCausalLM.extend` with a `KVCache`: new tokens are written into
per-layer key/value buffers (stacked like the layers and scanned with them) and attend to everything cached so far.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxadapt.config import ModelConfig
from jaxadapt.config.model import DTYPES
from jaxadapt.sharding import (LOGICAL_TO_MESH, active_mesh, constrain_batch, constrain_layer, gathers_layers,
                               recompute_gathered, split_vocab, vocab_parallel)
from jaxadapt.splash import splash_attention

REMAT_POLICIES = {
    "none": None,  # keep every activation (fastest, most memory)
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole layer in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,  # keep matmul outputs, recompute elementwise ops
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep weight matmuls only
}


@dataclass(frozen=True)
class Runtime:
    """How the model computes, as opposed to what it is (ModelConfig)."""

    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: str = "none"  # a key of REMAT_POLICIES
    attention_impl: str | None = None  # passed to jax.nn.dot_product_attention ('xla', 'cudnn', None = auto)
    attention_chunk: int = 0  # queries per chunk in training attention (see chunked_attention); 0 = all at once

    def __post_init__(self):
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r} is not one of {sorted(REMAT_POLICIES)}")
        if self.attention_chunk < 0:
            raise ValueError(f"attention_chunk={self.attention_chunk}; expected 0 (off) or a positive divisor of the "
                             "sequence length")
        for key in ("param_dtype", "compute_dtype"):
            if getattr(self, key) not in DTYPES:
                raise ValueError(f"{key}={getattr(self, key)!r}; expected one of {DTYPES}")


_DECODE_KERNELS: ContextVar = ContextVar("decode_kernels", default=None)


@contextmanager
def decode_kernels(kernels):
    """While tracing under this, a Linear kernel that `kernels.pack` laid out as panels (3-D, see
    LlamaModel.unstack_layers) is multiplied as `kernels.matmul(x, kernel)`, and one new token's cached attention
    over a layer given by number runs `kernels.attention`. Generation's decode step on XLA:CPU uses it with
    jaxadapt.cpu_decode."""
    token = _DECODE_KERNELS.set(kernels)
    try:
        yield
    finally:
        _DECODE_KERNELS.reset(token)


_ATTENTION_CHUNK: ContextVar = ContextVar("attention_chunk", default=None)


@contextmanager
def attention_chunking(chunk: int):
    """While tracing under this, uncached attention takes `chunk` queries at a time (0: all), whatever the model's
    Runtime says. Evaluation sizes it per padded batch width, which a fixed Runtime can't know (see
    jaxadapt.eval.scorer)."""
    token = _ATTENTION_CHUNK.set(chunk)
    try:
        yield
    finally:
        _ATTENTION_CHUNK.reset(token)


def _init(cfg: ModelConfig):
    return nnx.initializers.normal(cfg.initializer_range)


class LoRAParam(nnx.Param):
    """A LoRA factor. Its own type so that "train only LoRA" is a type filter, not a name match."""


class Linear(nnx.Module):
    """y = x @ kernel (+ bias) (+ scale * dropout(x) @ lora_a @ lora_b); kernel is [in, out].

    LoRA factors are absent until `jaxadapt.train.lora.add_lora` attaches them; `lora_scale` is alpha/r (or
    alpha/sqrt(r)) on adapted layers and 0 on the others, so LoRA can target a subset of the scanned layers.
    """

    def __init__(self, din: int, dout: int, *, bias: bool, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_init(cfg)(rngs.params(), (din, dout), jnp.dtype(rt.param_dtype)))
        self.bias = nnx.Param(jnp.zeros((dout,), rt.param_dtype)) if bias else None
        self.compute_dtype = jnp.dtype(rt.compute_dtype)
        # Declared as data (not static) so that add_lora can attach Variables later.
        self.lora_a, self.lora_b, self.lora_scale = nnx.data(None), nnx.data(None), nnx.data(None)
        self.lora_dropout = 0.0

    def __call__(self, x, rng=None):
        # The matmuls run on x flattened to [tokens, in]: for a [batch, seq, in] input, the kernel gradient would
        # contract two axes, which XLA:CPU lays out as a transposed copy of the [batch, seq, out] gradient (about a
        # quarter of the backward on CPU); a 2-D product's gradient is one plain dot.
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        cd = self.compute_dtype
        w, kernels = self.kernel[...], _DECODE_KERNELS.get()
        y = kernels.matmul(x, w) if kernels is not None and w.ndim == 3 else x @ w.astype(cd)
        if self.bias is not None:
            y = y + self.bias[...].astype(cd)
        if self.lora_a is not None:
            h = x
            if rng is not None and self.lora_dropout > 0:
                keep = jax.random.bernoulli(rng, 1.0 - self.lora_dropout, x.shape)
                h = jnp.where(keep, x / (1.0 - self.lora_dropout), 0).astype(x.dtype)
            # scale the rank-r intermediate, not the [batch, seq, out] result: ~out/r times fewer multiplies
            y = y + ((h @ self.lora_a[...].astype(cd)) * self.lora_scale[...].astype(cd)) @ self.lora_b[...].astype(cd)
        return y.reshape(*lead, y.shape[-1])


class RMSNorm(nnx.Module):
    """Normalise in float32, cast back, then scale (HF's order of operations). Gemma's scale by (1 + weight) (stored
    zero-centred), in float32 before the cast, as HF's Gemma does."""

    def __init__(self, dim: int, *, cfg: ModelConfig, rt: Runtime):
        self.weight = nnx.Param((jnp.zeros if cfg.gemma else jnp.ones)((dim,), rt.param_dtype))
        self.eps, self.offset = cfg.rms_norm_eps, cfg.gemma

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.offset:
            return (x32 * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)
        return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


class Embed(nnx.Module):
    """Token embeddings; Gemma's are multiplied by sqrt(hidden) (in the parameters' dtype, as HF does), the LM head
    reading the same matrix unscaled."""

    def __init__(self, vocab: int, dim: int, *, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        self.embedding = nnx.Param(_init(cfg)(rngs.params(), (vocab, dim), jnp.dtype(rt.param_dtype)))
        self.compute_dtype = jnp.dtype(rt.compute_dtype)
        self.scale = cfg.hidden_size ** 0.5 if cfg.gemma else None

    def __call__(self, ids):
        x = jnp.take(self.embedding[...], ids, axis=0)
        if self.scale is not None:
            x = x * jnp.asarray(self.scale, x.dtype)
        return x.astype(self.compute_dtype)


def _keys(rng, n):
    """n independent keys for the sub-modules, or n Nones when no randomness is wanted (inference)."""
    return [None] * n if rng is None else list(jax.random.split(rng, n))


def rope_cos_sin(cfg: ModelConfig, positions, sliding: bool = False):
    """cos, sin of shape [batch, seq, head_dim] in float32, rotate-half layout (frequencies repeated twice), for the
    sliding layers' RoPE base or the others' (they differ in Gemma-3)."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(cfg.inv_freq(sliding))
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):
    """x: [batch, seq, heads, head_dim]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def build_mask(key_valid, q_idx, sliding_window: int | None, segment_ids=None):
    """Boolean [batch, 1, q, k]: causal, valid key, inside the window, same document (if segment_ids are given).

    q_idx [q] are the queries' indices among the keys: all of them in training, the cache slots being written when
    decoding. Causality is by index, not position: packed documents restart positions but not indices.
    segment_ids [batch, k] only exist where queries and keys are the same tokens (packed training rows).
    """
    q_idx, k_idx = q_idx[:, None], jnp.arange(key_valid.shape[1])[None, :]
    mask = (k_idx <= q_idx)[None] & key_valid[:, None, :]
    if segment_ids is not None:
        mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
    if sliding_window is not None:
        mask = mask & (k_idx > q_idx - sliding_window)[None]
    return mask[:, None]


def softcap(x, cap: float | None):
    """cap * tanh(x / cap): Gemma-2's soft cap of attention scores and logits; x itself without a cap."""
    return x if cap is None else cap * jnp.tanh(x / cap)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class KVCache:
    """Keys and values of every layer: k, v are [layers, batch, kv_heads, max_len, head_dim].

    Heads before positions, so that the decode attention reads a layer's keys as a batched matrix without a
    transposed copy. The stacked buffers ride in the layer scan's carry and each layer writes its new entries in place
    (as scan inputs/outputs, XLA would copy the whole cache every decoded token).
    Prompts are left-padded so that every row writes the same slot `index`; `key_valid` [batch, max_len] marks the
    slots holding real tokens (not padding, not yet written). A bfloat16 cache holds its values' uint16 bit patterns:
    XLA:CPU rewrites a bfloat16 dynamic-update-slice as a float32 one on a converted copy of the whole stacked cache,
    every layer of every token, and a bitcast around it still copies; an integer cache is updated in place (what that
    saves: README, Performance).
    """

    k: jax.Array
    v: jax.Array
    key_valid: jax.Array
    index: jax.Array  # int32 scalar: the next slot to write

    @classmethod
    def empty(cls, cfg: ModelConfig, batch: int, max_len: int, dtype) -> KVCache:
        shape = (cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        stored = jnp.uint16 if jnp.dtype(dtype) == jnp.bfloat16 else dtype
        return cls(jnp.zeros(shape, stored), jnp.zeros(shape, stored), jnp.zeros((batch, max_len), bool), jnp.int32(0))


def _to_cache(x, cache):
    """x in the cache's stored dtype (see KVCache)."""
    if cache.dtype == jnp.uint16:
        return jax.lax.bitcast_convert_type(x.astype(jnp.bfloat16), jnp.uint16)
    return x.astype(cache.dtype)


def _from_cache(x):
    """Values read from a cache (see KVCache)."""
    return jax.lax.bitcast_convert_type(x, jnp.bfloat16) if x.dtype == jnp.uint16 else x


def grouped_attention(q, keys, values, mask, scale: float, cap: float | None = None):
    """Attention with query heads grouped per KV head (GQA), scores soft-capped (if `cap`) before the mask and
    softmaxed in float32, as in HF's eager attention. q [batch, t, heads, d]; keys, values [batch, kv_heads, s, d]
    (the cache's layout); mask [batch, 1, t, s] -> [batch, t, heads, d]."""
    b, t, heads, d = q.shape
    kvh = keys.shape[1]
    q = q.reshape(b, t, kvh, heads // kvh, d).transpose(0, 2, 3, 1, 4).reshape(b, kvh, -1, d)
    scores = jnp.einsum("bkqd,bksd->bkqs", q, keys.astype(q.dtype)).astype(jnp.float32) * scale
    scores = softcap(scores, cap).reshape(b, kvh, heads // kvh, t, -1)
    scores = jnp.where(mask[:, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype).reshape(b, kvh, -1, scores.shape[-1])
    out = jnp.einsum("bkqs,bksd->bkqd", probs, values.astype(q.dtype)).reshape(b, kvh, heads // kvh, t, d)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, heads, d)


def cached_attention(q, k, v, kv, layer, index, mask, scale: float, cap: float | None = None):
    """Attention of new tokens against the stacked cache `kv` = (keys, values) after writing their k, v into
    `layer`'s slots from `index` -> (output [batch, t, heads, head_dim], updated kv).

    q [batch, t, heads, head_dim]; k, v [batch, t, kv_heads, head_dim]; mask [batch, 1, t, max_len]
    (grouped_attention).
    """
    cache_k, cache_v = kv
    at = (layer, 0, 0, index, 0)
    cache_k = jax.lax.dynamic_update_slice(cache_k, _to_cache(k.swapaxes(1, 2)[None], cache_k), at)
    cache_v = jax.lax.dynamic_update_slice(cache_v, _to_cache(v.swapaxes(1, 2)[None], cache_v), at)
    kernels = _DECODE_KERNELS.get()
    if kernels is not None and q.shape[1] == 1 and isinstance(layer, int) and cap is None:  # see decode_kernels
        out = kernels.attention(q[:, 0], cache_k, cache_v, mask[:, 0, 0], layer, scale)
        return out[:, None], (cache_k, cache_v)  # in q's dtype
    keys, values = _from_cache(cache_k[layer]), _from_cache(cache_v[layer])  # [batch, kv_heads, max_len, head_dim]
    return grouped_attention(q, keys, values, mask, scale, cap), (cache_k, cache_v)


def remat_chunks(fn, chunk: int, *xs):
    """fn applied to successive `chunk`-long slices of axis 1 of every x, one slice at a time in a scan and under
    jax.checkpoint (the backward pass recomputes each slice's intermediates instead of keeping them), -> fn's
    outputs put back together along axis 1. What a step holds at once shrinks by t / chunk for whatever fn builds.
    chunk 0 (or >= t) is fn on the whole arrays, as if unchunked."""
    t = xs[0].shape[1]
    if not 0 < chunk < t:
        return fn(*xs)
    if t % chunk:
        raise ValueError(f"chunk={chunk} does not divide the sequence length {t}")

    def split(x):
        return x.reshape(x.shape[0], t // chunk, chunk, *x.shape[2:]).swapaxes(0, 1)

    _, out = jax.lax.scan(jax.checkpoint(lambda _, c: (None, fn(*c))), None, tuple(map(split, xs)))
    return jax.tree.map(lambda y: y.swapaxes(0, 1).reshape(y.shape[1], t, *y.shape[3:]), out)


def chunked_attention(q, k, v, mask, chunk: int, impl=None, scale: float | None = None, cap: float | None = None):
    """jax.nn.dot_product_attention over `chunk` queries at a time (remat_chunks): the attention weights held at once
    are [batch, heads, chunk, keys] instead of [batch, heads, queries, keys], which is what dominates a long
    sequence's step where no fused attention kernel applies. Each query row's softmax is the same computation as
    unchunked; chunk 0 attends all queries at once. q [batch, t, heads, d]; mask [batch, 1, t, keys]. Soft-capped
    scores (`cap`), which jax.nn.dot_product_attention does not offer, go through grouped_attention."""
    if cap is not None:
        keys, values = k.swapaxes(1, 2), v.swapaxes(1, 2)
        return remat_chunks(lambda qc, mc: grouped_attention(qc, keys, values, mc.swapaxes(1, 2), scale, cap),
                            chunk, q, mask.swapaxes(1, 2))
    return remat_chunks(lambda qc, mc: jax.nn.dot_product_attention(qc, k, v, mask=mc.swapaxes(1, 2), scale=scale,
                                                                    implementation=impl),
                        chunk, q, mask.swapaxes(1, 2))


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        kw = dict(cfg=cfg, rt=rt, rngs=rngs)
        self.q_proj = Linear(cfg.hidden_size, cfg.q_dim, bias=cfg.attention_bias, **kw)
        self.k_proj = Linear(cfg.hidden_size, cfg.kv_dim, bias=cfg.attention_bias, **kw)
        self.v_proj = Linear(cfg.hidden_size, cfg.kv_dim, bias=cfg.attention_bias, **kw)
        self.o_proj = Linear(cfg.q_dim, cfg.hidden_size, bias=cfg.o_proj_bias, **kw)
        # Qwen3: each head's queries and keys RMS-normalised over head_dim before RoPE.
        self.q_norm = RMSNorm(cfg.head_dim, cfg=cfg, rt=rt) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg=cfg, rt=rt) if cfg.qk_norm else None
        self.cfg, self.impl, self.chunk = cfg, rt.attention_impl, rt.attention_chunk
        self.scale, self.cap = cfg.attention_scale, cfg.attn_logit_softcapping
        if self.cap is not None and self.impl not in (None, "xla", "splash"):
            raise ValueError(f"attention_impl={self.impl!r} has no soft-capped attention scores "
                             f"(attn_logit_softcapping={self.cap}); use xla")

    def __call__(self, x, cos, sin, mask, rng=None, kv=None, layer=None, write_at=None):
        """-> (output, kv). With `kv`, the stacked cache, the new keys/values are written into `layer`'s slots from
        `write_at` and the queries attend to that layer's whole cache (the mask picks the valid slots)."""
        b, t, _ = x.shape
        c = self.cfg
        r = _keys(rng, 4)
        q = self.q_proj(x, r[0]).reshape(b, t, c.num_attention_heads, c.head_dim)
        k = self.k_proj(x, r[1]).reshape(b, t, c.num_key_value_heads, c.head_dim)
        v = self.v_proj(x, r[2]).reshape(b, t, c.num_key_value_heads, c.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is None and self.impl == "splash":  # `mask` holds segment ids here (LlamaModel.layer_inputs)
            out = self.splash(q, k, v, mask, layer)
        elif kv is None:
            chunk = _ATTENTION_CHUNK.get()
            out = chunked_attention(q, k, v, mask, self.chunk if chunk is None else chunk, self.impl, self.scale,
                                    self.cap)
        else:
            out, kv = cached_attention(q, k, v, kv, layer, write_at, mask, self.scale, self.cap)
        return self.o_proj(out.reshape(b, t, c.q_dim), r[3]), kv


    def splash(self, q, k, v, ids, layer):
        """jaxadapt.splash over the layer's window: the kernel's mask is static, so where the layers differ (Gemma)
        and the scan's layer index is traced, a cond picks the sliding or the full kernel."""
        cfg, mesh = self.cfg, active_mesh()
        spec = P(LOGICAL_TO_MESH["batch"], None, LOGICAL_TO_MESH["heads"], None)

        def run(sliding: bool):
            return splash_attention(q, k, v, ids, sliding_window=cfg.sliding_window if sliding else None,
                                    scale=self.scale, softcap=self.cap, mesh=mesh, spec=spec if mesh else None)

        sliding = is_sliding(cfg, layer)
        if isinstance(sliding, bool):
            return run(sliding)
        return jax.lax.cond(sliding, lambda: run(True), lambda: run(False))


def is_sliding(cfg: ModelConfig, layer) -> bool | jax.Array:
    """Whether `layer` attends through the sliding window: a Python bool where that is known when tracing (one kind
    of layer, or an unrolled layer's int index), else a traced flag for the scan's layer index to select with."""
    kinds = set(cfg.sliding_layers)
    if len(kinds) == 1:
        return kinds.pop()
    if isinstance(layer, int):
        return cfg.sliding_layers[layer]
    return jnp.asarray(cfg.sliding_layers)[layer]


# by the names config/model.py's ACTIVATIONS accepts (tests/test_model.py checks the two agree)
ACTIVATIONS = {"silu": jax.nn.silu, "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True)}


class MLP(nnx.Module):
    """down(act(gate(x)) * up(x)): SwiGLU, or GeGLU with the tanh-approximated GELU (Gemma)."""

    def __init__(self, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        kw = dict(bias=cfg.mlp_bias, cfg=cfg, rt=rt, rngs=rngs)
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, **kw)
        self.act = cfg.hidden_act

    def __call__(self, x, rng=None):
        r = _keys(rng, 3)
        return self.down_proj(ACTIVATIONS[self.act](self.gate_proj(x, r[0])) * self.up_proj(x, r[1]), r[2])


class DecoderLayer(nnx.Module):
    """Pre-norm residual blocks. Llama's post_attention_layernorm is the MLP's input norm; Gemma normalises each
    block's output too (post_attention_layernorm, post_feedforward_layernorm) and the MLP's input with
    pre_feedforward_layernorm."""

    def __init__(self, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg=cfg, rt=rt)
        self.self_attn = Attention(cfg, rt, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg=cfg, rt=rt)
        gemma = cfg.gemma
        self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg=cfg, rt=rt) if gemma else None
        self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, cfg=cfg, rt=rt) if gemma else None
        self.mlp = MLP(cfg, rt, rngs)

    def __call__(self, h, cos, sin, mask, rng=None, kv=None, layer=None, write_at=None):
        """-> (h, kv): kv is the updated stacked cache (None without one), see Attention."""
        r = _keys(rng, 2)
        attn, kv = self.self_attn(self.input_layernorm(h), cos, sin, mask, r[0], kv, layer, write_at)
        if self.pre_feedforward_layernorm is None:
            h = h + attn
            return h + self.mlp(self.post_attention_layernorm(h), r[1]), kv
        h = h + self.post_attention_layernorm(attn)
        return h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h), r[1])), kv


class LlamaModel(nnx.Module):
    """Embeddings, the scanned stack of decoder layers, the final norm (HF's `model.` prefix)."""

    def __init__(self, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, cfg=cfg, rt=rt, rngs=rngs)

        @nnx.split_rngs(splits=cfg.num_hidden_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def stacked(r):
            return DecoderLayer(cfg, rt, r)

        self.layers = stacked(rngs)
        self.norm = RMSNorm(cfg.hidden_size, cfg=cfg, rt=rt)
        self.cfg, self.remat, self.compute_dtype = cfg, rt.remat, jnp.dtype(rt.compute_dtype)
        self.splash = rt.attention_impl == "splash"

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None, rng=None):
        b, t = input_ids.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t), (b, t))
        key_valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
        inputs = self.layer_inputs(positions, key_valid, jnp.arange(t), segment_ids, fused=self.splash)
        h, _ = self.run_layers(self.embed_tokens(input_ids), inputs, rng)
        return self.norm(h)

    def layer_inputs(self, positions, key_valid, q_idx, segment_ids=None, fused: bool = False) -> dict:
        """{sliding: (cos, sin, mask)} for each kind of layer the model has (see rope_cos_sin, build_mask): with
        full and sliding layers both (Gemma) each layer picks its own in run_layers. `fused` (splash attention):
        the mask is the [batch, t] segment ids instead, padding given its own id (-1), the kernel building the rest."""
        cfg = self.cfg
        if fused:
            ids = jnp.where(key_valid, 0 if segment_ids is None else segment_ids, -1).astype(jnp.int32)
        return {sliding: (*rope_cos_sin(cfg, positions, sliding),
                          ids if fused else build_mask(key_valid, q_idx, cfg.sliding_window if sliding else None,
                                                       segment_ids))
                for sliding in sorted(set(cfg.sliding_layers))}

    def extend(self, input_ids, cache: KVCache, attention_mask=None, layers=None):
        """Run new tokens against a KV cache -> (hidden states [batch, t, hidden], updated cache).

        Called once with the left-padded prompts (attention_mask marks the real tokens), then with one token at a
        time. RoPE positions count each row's real tokens, so padding does not shift them. `layers`, from
        `unstack_layers`, runs the layers unrolled on separately stored weights (see there).
        """
        t = input_ids.shape[1]
        new_valid = jnp.ones(input_ids.shape, bool) if attention_mask is None else attention_mask.astype(bool)
        positions = cache.key_valid.sum(-1, keepdims=True) + jnp.cumsum(new_valid, axis=1) - 1
        key_valid = jax.lax.dynamic_update_slice(cache.key_valid, new_valid, (0, cache.index))
        inputs = self.layer_inputs(positions, key_valid, cache.index + jnp.arange(t))
        h, (k, v) = self.run_layers(self.embed_tokens(input_ids), inputs, kv=(cache.k, cache.v),
                                    write_at=cache.index, layers=layers)
        return self.norm(h), KVCache(k, v, key_valid, cache.index + t)

    def unstack_layers(self, pack=None) -> tuple:
        """Each layer's params as arrays of their own. A scan slices every layer's weights out of the stacked arrays
        on each pass, and XLA:CPU copies that slice before the matmuls: for a decoded token, whose matmuls are
        bound by reading the weights, that doubles the memory traffic. Generation slices once per set of weights
        instead (jaxadapt.generate.decode_copy) and runs the layers unrolled on these. `pack`: a function applied to
        each Linear kernel (see decode_kernels)."""
        _, state = nnx.split(self.layers)

        def take(i, path, x):
            return pack(x[i]) if pack is not None and jax.tree_util.DictKey("kernel") in path else x[i]

        return tuple(jax.tree_util.tree_map_with_path(partial(take, i), state)
                     for i in range(self.cfg.num_hidden_layers))

    def run_layers(self, h, inputs: dict, rng=None, kv=None, write_at=None, layers=None):
        """Scan h through the stacked layers -> (h, kv); the stacked caches `kv` ride in the carry (see KVCache).
        With `layers` (from `unstack_layers`) the layers run unrolled on those instead. `inputs`: layer_inputs."""
        graphdef, state = nnx.split(self.layers)

        def layer_kind(layer):
            """The (cos, sin, mask) of a layer: chosen by a select where the scan's layer index is traced."""
            sliding = is_sliding(self.cfg, layer)
            if isinstance(sliding, bool):
                return inputs[sliding]
            return jax.tree.map(lambda a, b: jnp.where(sliding, a, b), inputs[True], inputs[False])

        def body(carry, xs):
            h, kv = carry
            layer_state, layer_rng, layer = xs
            cos, sin, mask = layer_kind(layer)
            # Under FSDP: the sliced layer stays sharded and is gathered here, one layer per iteration; the
            # activations stay split over the batch. Both are identity outside a train step on an fsdp mesh.
            layer_state = constrain_layer(layer_state, self.compute_dtype)
            h, kv = nnx.merge(graphdef, layer_state)(constrain_batch(h), cos, sin, mask, layer_rng, kv, layer,
                                                     write_at)
            return (constrain_batch(h), kv), None

        if layers is not None:
            carry = (h, kv)
            for i, layer_state in enumerate(layers):
                carry, _ = body(carry, (layer_state, None, i))
            return carry
        if gathers_layers():  # never keep the gathered weights of every layer for the backward
            body = jax.checkpoint(body, policy=recompute_gathered(REMAT_POLICIES[self.remat]), prevent_cse=False)
        elif self.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
        n = self.cfg.num_hidden_layers
        layer_rngs = None if rng is None else jax.random.split(rng, n)
        (h, kv), _ = jax.lax.scan(body, (constrain_batch(h), kv), (state, layer_rngs, jnp.arange(n)))
        return h, kv


def project(h, head, cap: float | None = None):
    """float32 logits of hidden states h [..., hidden] on `head` [hidden, vocab] (LlamaForCausalLM.head), soft-capped
    by `cap` (Gemma-2's final_logit_softcapping). Under FSDP the head is vocabulary-parallel
    (jaxadapt.sharding.vocab_parallel)."""
    h, head = vocab_parallel(h, head)
    # float32 out of the product itself (bfloat16 inputs accumulate in float32 anyway): no logit rounded to bfloat16
    return softcap(split_vocab(jnp.matmul(h, head, preferred_element_type=jnp.float32)), cap)


class LlamaForCausalLM(nnx.Module):
    """`model(input_ids, attention_mask=None, positions=None, segment_ids=None, rng=None)` -> float32 logits.

    `rng` is only needed for LoRA dropout during training; logits are [batch, seq, vocab]. Generation uses
    `init_cache` + `extend` instead (jaxadapt.generate).
    """

    def __init__(self, cfg: ModelConfig, rt: Runtime = Runtime(), *, rngs: nnx.Rngs):
        self.config, self.runtime = cfg, rt
        self.model = LlamaModel(cfg, rt, rngs)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(
            cfg.hidden_size, cfg.vocab_size, bias=False, cfg=cfg, rt=rt, rngs=rngs
        )

    def hidden_states(self, input_ids, attention_mask=None, positions=None, segment_ids=None, rng=None):
        return self.model(input_ids, attention_mask, positions, segment_ids, rng)

    def head(self):
        """The LM head as a [hidden, vocab] matrix in the compute dtype: the embedding matrix for tied models."""
        head = self.model.embed_tokens.embedding[...].T if self.lm_head is None else self.lm_head.kernel[...]
        return head.astype(self.model.compute_dtype)

    def logits(self, h):
        """float32 logits of hidden states h [..., hidden] (see project)."""
        return project(h, self.head(), self.config.final_logit_softcapping)

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None, rng=None):
        return self.logits(self.hidden_states(input_ids, attention_mask, positions, segment_ids, rng))

    def init_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache for `extend`, in the compute dtype (bfloat16 as uint16 bit patterns, see KVCache)."""
        return KVCache.empty(self.config, batch, max_len, jnp.dtype(self.runtime.compute_dtype))

    def extend(self, input_ids, cache: KVCache, attention_mask=None, layers=None):
        """(hidden states, cache) of new tokens run against `cache`; see LlamaModel.extend. `logits(h[:, -1])` gives
        the next token's logits without computing the vocabulary projection for every prompt position."""
        return self.model.extend(input_ids, cache, attention_mask, layers)


def init_model(cfg: ModelConfig, rt: Runtime = Runtime(), seed: int = 0) -> LlamaForCausalLM:
    return LlamaForCausalLM(cfg, rt, rngs=nnx.Rngs(seed))


def abstract_model(cfg: ModelConfig, rt: Runtime = Runtime()) -> LlamaForCausalLM:
    """The model with ShapeDtypeStruct leaves: shapes for sharded loading, no memory allocated."""
    return nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rt, rngs=nnx.Rngs(0)))
