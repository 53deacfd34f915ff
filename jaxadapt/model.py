"""The Llama-family decoder (Llama-2/3, Mistral, Qwen2, SmolLM2) in Flax NNX.

Module and parameter names mirror HF's (`model.layers.self_attn.q_proj`, `embed_tokens`, `lm_head`), so HF
conversion is a transpose of each Linear weight plus stacking the layers. Differences from HF on purpose:
- Linear kernels are `[in, out]` (HF stores `[out, in]`).
- The decoder layers are one stacked module (a leading `layers` axis on every parameter) run with
  `jax.lax.scan`: compile time does not grow with depth, and remat applies per layer.
- Attention takes `segment_ids` (packed documents never attend to each other) and `positions` (RoPE restarts
  per document), on top of the causal mask, the key padding mask and the optional sliding window.
RoPE uses HF's rotate-half layout with cos/sin computed in float32, like HF.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from jaxadapt.config import ModelConfig

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

    def __post_init__(self):
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r} is not one of {sorted(REMAT_POLICIES)}")
        for key in ("param_dtype", "compute_dtype"):
            if getattr(self, key) not in ("float32", "bfloat16", "float16"):
                raise ValueError(f"{key}={getattr(self, key)!r}; expected float32, bfloat16 or float16")


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
        cd = self.compute_dtype
        y = x @ self.kernel[...].astype(cd)
        if self.bias is not None:
            y = y + self.bias[...].astype(cd)
        if self.lora_a is not None:
            h = x
            if rng is not None and self.lora_dropout > 0:
                keep = jax.random.bernoulli(rng, 1.0 - self.lora_dropout, x.shape)
                h = jnp.where(keep, x / (1.0 - self.lora_dropout), 0).astype(x.dtype)
            # scale the rank-r intermediate, not the [batch, seq, out] result: ~out/r times fewer multiplies
            y = y + ((h @ self.lora_a[...].astype(cd)) * self.lora_scale[...].astype(cd)) @ self.lora_b[...].astype(cd)
        return y


class RMSNorm(nnx.Module):
    """Normalise in float32, cast back, then scale (HF's order of operations)."""

    def __init__(self, dim: int, *, cfg: ModelConfig, rt: Runtime):
        self.weight = nnx.Param(jnp.ones((dim,), rt.param_dtype))
        self.eps = cfg.rms_norm_eps

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


class Embed(nnx.Module):
    def __init__(self, vocab: int, dim: int, *, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        self.embedding = nnx.Param(_init(cfg)(rngs.params(), (vocab, dim), jnp.dtype(rt.param_dtype)))
        self.compute_dtype = jnp.dtype(rt.compute_dtype)

    def __call__(self, ids):
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.compute_dtype)

    def attend(self, h):
        """Tied LM head: logits against the embedding matrix."""
        return h @ self.embedding[...].astype(self.compute_dtype).T


def _keys(rng, n):
    """n independent keys for the sub-modules, or n Nones when no randomness is wanted (inference)."""
    return [None] * n if rng is None else list(jax.random.split(rng, n))


def rope_cos_sin(cfg: ModelConfig, positions):
    """cos, sin of shape [batch, seq, head_dim] in float32, rotate-half layout (frequencies repeated twice)."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(cfg.inv_freq())
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):
    """x: [batch, seq, heads, head_dim]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


def build_mask(segment_ids, key_valid, sliding_window: int | None):
    """Boolean [batch, 1, q, k]: causal within a document, same document, valid key, inside the window.

    Causality is by index, not position: packed documents restart positions but not indices.
    """
    q_len, k_len = segment_ids.shape[1], key_valid.shape[1]
    q_idx = jnp.arange(k_len - q_len, k_len)[:, None]
    k_idx = jnp.arange(k_len)[None, :]
    mask = (k_idx <= q_idx)[None]
    mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
    mask = mask & key_valid[:, None, :]
    if sliding_window is not None:
        mask = mask & (k_idx > q_idx - sliding_window)[None]
    return mask[:, None]


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        kw = dict(cfg=cfg, rt=rt, rngs=rngs)
        self.q_proj = Linear(cfg.hidden_size, cfg.q_dim, bias=cfg.attention_bias, **kw)
        self.k_proj = Linear(cfg.hidden_size, cfg.kv_dim, bias=cfg.attention_bias, **kw)
        self.v_proj = Linear(cfg.hidden_size, cfg.kv_dim, bias=cfg.attention_bias, **kw)
        self.o_proj = Linear(cfg.q_dim, cfg.hidden_size, bias=cfg.o_proj_bias, **kw)
        self.cfg, self.impl = cfg, rt.attention_impl

    def __call__(self, x, cos, sin, mask, rng=None):
        b, t, _ = x.shape
        c = self.cfg
        r = _keys(rng, 4)
        q = self.q_proj(x, r[0]).reshape(b, t, c.num_attention_heads, c.head_dim)
        k = self.k_proj(x, r[1]).reshape(b, t, c.num_key_value_heads, c.head_dim)
        v = self.v_proj(x, r[2]).reshape(b, t, c.num_key_value_heads, c.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=self.impl)
        return self.o_proj(out.reshape(b, t, c.q_dim), r[3])


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        kw = dict(bias=cfg.mlp_bias, cfg=cfg, rt=rt, rngs=rngs)
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, **kw)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, **kw)

    def __call__(self, x, rng=None):
        r = _keys(rng, 3)
        return self.down_proj(jax.nn.silu(self.gate_proj(x, r[0])) * self.up_proj(x, r[1]), r[2])


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rt: Runtime, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg=cfg, rt=rt)
        self.self_attn = Attention(cfg, rt, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg=cfg, rt=rt)
        self.mlp = MLP(cfg, rt, rngs)

    def __call__(self, h, cos, sin, mask, rng=None):
        r = _keys(rng, 2)
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask, r[0])
        return h + self.mlp(self.post_attention_layernorm(h), r[1])


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
        self.cfg, self.remat = cfg, rt.remat

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None, rng=None):
        b, t = input_ids.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t), (b, t))
        if segment_ids is None:
            segment_ids = jnp.zeros((b, t), jnp.int32)
        key_valid = jnp.ones((b, t), bool) if attention_mask is None else attention_mask.astype(bool)
        mask = build_mask(segment_ids, key_valid, self.cfg.sliding_window)
        cos, sin = rope_cos_sin(self.cfg, positions)

        graphdef, state = nnx.split(self.layers)

        def body(h, xs):
            layer_state, layer_rng = xs
            return nnx.merge(graphdef, layer_state)(h, cos, sin, mask, layer_rng), None

        if self.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat], prevent_cse=False)
        layer_rngs = None if rng is None else jax.random.split(rng, self.cfg.num_hidden_layers)
        h, _ = jax.lax.scan(body, self.embed_tokens(input_ids), (state, layer_rngs))
        return self.norm(h)



class LlamaForCausalLM(nnx.Module):
    """`model(input_ids, attention_mask=None, positions=None, segment_ids=None, rng=None)` -> float32 logits.

    `rng` is only needed for LoRA dropout during training; logits are [batch, seq, vocab].
    """

    def __init__(self, cfg: ModelConfig, rt: Runtime = Runtime(), *, rngs: nnx.Rngs):
        self.config, self.runtime = cfg, rt
        self.model = LlamaModel(cfg, rt, rngs)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(
            cfg.hidden_size, cfg.vocab_size, bias=False, cfg=cfg, rt=rt, rngs=rngs
        )

    def hidden_states(self, input_ids, attention_mask=None, positions=None, segment_ids=None, rng=None):
        return self.model(input_ids, attention_mask, positions, segment_ids, rng)

    def logits(self, h):
        out = self.model.embed_tokens.attend(h) if self.lm_head is None else self.lm_head(h)
        return out.astype(jnp.float32)

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None, rng=None):
        return self.logits(self.hidden_states(input_ids, attention_mask, positions, segment_ids, rng))


def init_model(cfg: ModelConfig, rt: Runtime = Runtime(), seed: int = 0) -> LlamaForCausalLM:
    return LlamaForCausalLM(cfg, rt, rngs=nnx.Rngs(seed))


def abstract_model(cfg: ModelConfig, rt: Runtime = Runtime()) -> LlamaForCausalLM:
    """The model with ShapeDtypeStruct leaves: shapes for sharded loading, no memory allocated."""
    return nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rt, rngs=nnx.Rngs(0)))
