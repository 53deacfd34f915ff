"""Model configuration: one frozen dataclass for every supported Llama-family architecture.

`ModelConfig.from_hf` reads a `transformers` config dict (config.json) and `to_hf` writes one back, so an
HF -> jaxadapt -> HF round trip keeps every field the architecture needs. Anything we cannot represent
exactly (an unknown rope type, per-layer sliding windows) is rejected here, before any weights are read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxadapt.errors import UserError

log = logging.getLogger(__name__)

# model_type -> the HF architecture class name written into config.json on export.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
}
QK_NORM_FAMILIES = ("qwen3", "gemma3_text")  # RMSNorm over each head of q and k, before RoPE
# Gemma: RMSNorm scales by (1 + w), norms before and after attention and the MLP, embeddings times sqrt(hidden).
GEMMA_FAMILIES = ("gemma2", "gemma3_text")
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")  # SwiGLU (Llama, Qwen) and GeGLU with tanh-approximated GELU (Gemma)
LAYER_TYPES = ("full_attention", "sliding_attention")
# HF config defaults of the Gemma families (Gemma2Config, Gemma3TextConfig): their config.json files, the multimodal
# Gemma-3's text_config above all, leave out whatever equals these.
GEMMA_DEFAULTS = {
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=8192,
                   rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
                   query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=30.0,
                   attn_logit_softcapping=50.0, rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh"),
    "gemma3_text": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=131072,
                        rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
                        query_pre_attn_scalar=256, sliding_window=4096, final_logit_softcapping=None,
                        attn_logit_softcapping=None, rope_theta=1_000_000.0, rope_local_base_freq=10000.0,
                        sliding_window_pattern=6, hidden_activation="gelu_pytorch_tanh"),
}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(UserError):
    """A model config that jaxadapt cannot represent; the message names the key and the value."""


def check_dtype(dtype: str) -> str:
    """A tensor dtype jaxadapt reads and writes, or a ConfigError naming the value."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return dtype


@dataclass(frozen=True)
class ModelConfig:
    model_type: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    # rope_scaling as in HF's `rope_parameters` minus rope_theta, e.g. {"rope_type": "llama3", "factor": 8.0, ...}.
    rope_scaling: tuple[tuple[str, Any], ...] = ()
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v biases (Qwen2 always; Llama and Qwen3 optional)
    o_proj_bias: bool = False  # Llama's and Qwen3's attention_bias also add an o_proj bias; Qwen2's does not
    mlp_bias: bool = False
    sliding_window: int | None = None  # a sliding layer attends to at most this many keys (itself included)
    # One of LAYER_TYPES per layer where layers differ (Gemma); () means every layer slides iff sliding_window is set.
    layer_types: tuple[str, ...] = ()
    rope_local_theta: float | None = None  # Gemma-3: the RoPE base of sliding layers (rope_scaling is the full ones')
    query_pre_attn_scalar: float | None = None  # Gemma: attention scores scale by this ** -0.5, not head_dim ** -0.5
    attn_logit_softcapping: float | None = None  # Gemma-2: scores -> cap * tanh(scores / cap) before the mask
    final_logit_softcapping: float | None = None  # Gemma-2: the same on the output logits
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    # Extra HF keys we do not interpret but keep for a faithful export (e.g. torch_dtype, generation hints).
    extra: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    def __post_init__(self):
        if self.model_type not in ARCHITECTURES:
            raise ConfigError(
                f"model_type={self.model_type!r} is not supported; expected one of {sorted(ARCHITECTURES)}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not supported; expected one of {ACTIVATIONS}")
        if self.layer_types and len(self.layer_types) != self.num_hidden_layers:
            raise ConfigError(f"layer_types has {len(self.layer_types)} entries; expected one per layer "
                              f"(num_hidden_layers={self.num_hidden_layers})")
        if set(self.layer_types) - set(LAYER_TYPES):
            raise ConfigError(f"layer_types holds {sorted(set(self.layer_types) - set(LAYER_TYPES))}; expected "
                              f"{LAYER_TYPES}")
        if "sliding_attention" in self.layer_types and self.sliding_window is None:
            raise ConfigError("layer_types has sliding_attention layers but sliding_window is not set")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        rope_type = self.rope_dict.get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ConfigError(f"rope_scaling.rope_type={rope_type!r} is not supported; expected one of {SUPPORTED_ROPE_TYPES}")

    @property
    def rope_dict(self) -> dict[str, Any]:
        return dict(self.rope_scaling)

    @property
    def qk_norm(self) -> bool:
        """Per-head RMSNorm of the queries and keys (weights [head_dim]) after the projections, before RoPE."""
        return self.model_type in QK_NORM_FAMILIES

    @property
    def gemma(self) -> bool:
        """(1 + w) RMSNorms, post-attention and pre/post-feedforward norms, embeddings scaled by sqrt(hidden)."""
        return self.model_type in GEMMA_FAMILIES

    @property
    def sliding_layers(self) -> tuple[bool, ...]:
        """Whether each layer attends through the sliding window (the others attend to every earlier key)."""
        if self.layer_types:
            return tuple(t == "sliding_attention" for t in self.layer_types)
        return (self.sliding_window is not None,) * self.num_hidden_layers

    @property
    def attention_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def inv_freq(self, sliding: bool = False) -> np.ndarray:
        """RoPE inverse frequencies (float32, length head_dim/2), following HF's rope_type semantics. `sliding`:
        those of the sliding layers, which differ where rope_local_theta is set (Gemma-3: plain RoPE on its base)."""
        dim = self.head_dim
        local = sliding and self.rope_local_theta is not None
        theta = self.rope_local_theta if local else self.rope_theta
        inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
        rope = {} if local else self.rope_dict
        kind = rope.get("rope_type", "default")
        if kind == "linear":
            inv = inv / rope["factor"]
        elif kind == "llama3":
            factor, lo, hi = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
            old_len = rope["original_max_position_embeddings"]
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > old_len / lo, inv / factor, inv)
            smooth = (old_len / wavelen - lo) / (hi - lo)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < old_len / hi) & ~(wavelen > old_len / lo)
            inv = np.where(medium, smoothed, scaled)
        return inv.astype(np.float32)

    # ------------------------------------------------------------------ HF config.json <-> ModelConfig
    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        """Build from an HF config dict. `source` names the file in error messages."""
        if hf.get("model_type") == "gemma3":
            hf = _gemma3_text_tower(hf, source)
        model_type = hf.get("model_type")
        if model_type not in ARCHITECTURES:
            raise ConfigError(
                f"{source}: model_type={model_type!r} is not supported; expected one of {sorted(ARCHITECTURES)}"
            )
        if model_type in GEMMA_FAMILIES:
            hf = _gemma_config(hf, source)
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if key not in hf:
                raise ConfigError(f"{source}: required key {key!r} is missing")
        heads = hf["num_attention_heads"]
        rope = dict(hf.get("rope_parameters") or {})
        legacy = hf.get("rope_scaling") or {}
        rope.update({k: v for k, v in legacy.items() if k not in rope})
        if "type" in rope and "rope_type" not in rope:
            rope["rope_type"] = rope.pop("type")
        rope.pop("type", None)
        theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
        if rope.get("rope_type", "default") == "default":
            rope = {}

        sliding, layer_types = _attention_layers(hf, source)
        known = {f.name for f in dataclasses.fields(cls)} | {
            "rope_parameters", "rope_scaling", "architectures", "use_sliding_window", "max_window_layers",
            "layer_types", "transformers_version", "pretraining_tp", "use_cache", "attention_dropout",
            "hidden_activation", "rope_local_base_freq", "sliding_window_pattern", "_sliding_window_pattern",
            "use_bidirectional_attention",
        }
        extra = tuple(sorted((k, v) for k, v in hf.items() if k not in known and _jsonable(v)))
        bias = bool(hf.get("attention_bias", model_type == "qwen2"))
        # Qwen3Config's head_dim defaults to 128, not hidden_size / heads (its config.json always states it).
        head_dim = hf.get("head_dim") or (128 if model_type == "qwen3" else hf["hidden_size"] // heads)
        try:
            return cls(
                model_type=model_type,
                vocab_size=int(hf["vocab_size"]),
                hidden_size=int(hf["hidden_size"]),
                intermediate_size=int(hf["intermediate_size"]),
                num_hidden_layers=int(hf["num_hidden_layers"]),
                num_attention_heads=int(heads),
                num_key_value_heads=int(hf.get("num_key_value_heads") or heads),
                head_dim=int(head_dim),
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
                rope_theta=float(theta),
                rope_scaling=tuple(sorted(rope.items())),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                attention_bias=True if model_type == "qwen2" else bias,
                o_proj_bias=bias if model_type in ("llama", "qwen3") else False,
                mlp_bias=bool(hf.get("mlp_bias", False)),
                sliding_window=sliding,
                layer_types=layer_types,
                rope_local_theta=hf.get("rope_local_theta"),
                query_pre_attn_scalar=hf.get("query_pre_attn_scalar"),
                attn_logit_softcapping=hf.get("attn_logit_softcapping"),
                final_logit_softcapping=hf.get("final_logit_softcapping"),
                hidden_act=hf.get("hidden_activation") or hf.get("hidden_act", "silu"),
                initializer_range=float(hf.get("initializer_range", 0.02)),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_id=hf.get("eos_token_id"),
                pad_token_id=hf.get("pad_token_id"),
                extra=extra,
            )
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf(self, dtype: str | None = None) -> dict[str, Any]:
        """An HF config dict that `transformers.AutoConfig` reads back to an equivalent model."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            architectures=[ARCHITECTURES[self.model_type]],
            model_type=self.model_type,
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters={"rope_theta": self.rope_theta, "rope_type": "default", **self.rope_dict},
            tie_word_embeddings=self.tie_word_embeddings,
            hidden_act=self.hidden_act,
            initializer_range=self.initializer_range,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
        )
        if self.model_type == "llama":
            out.update(attention_bias=self.attention_bias, mlp_bias=self.mlp_bias)
        if self.model_type == "mistral":
            out["sliding_window"] = self.sliding_window
        if self.model_type == "qwen3":
            out["attention_bias"] = self.attention_bias
        if self.gemma:
            del out["hidden_act"]  # Gemma's configs name it hidden_activation
            out.update(hidden_activation=self.hidden_act, attention_bias=self.attention_bias,
                       query_pre_attn_scalar=self.query_pre_attn_scalar, sliding_window=self.sliding_window,
                       layer_types=list(self.layer_types), attn_logit_softcapping=self.attn_logit_softcapping,
                       final_logit_softcapping=self.final_logit_softcapping)
        if self.model_type == "gemma3_text":
            out["rope_parameters"] = {
                "full_attention": out["rope_parameters"],
                "sliding_attention": {"rope_type": "default", "rope_theta": self.rope_local_theta or self.rope_theta},
            }
        if self.model_type == "qwen2" and self.head_dim == self.hidden_size // self.num_attention_heads:
            del out["head_dim"]  # Qwen2Config derives it; writing it would differ from HF's own export
        if self.model_type in ("qwen2", "qwen3"):
            sliding = self.sliding_layers
            out.update(
                use_sliding_window=self.sliding_window is not None,
                sliding_window=self.sliding_window,
                # HF derives layer_types from this when they are absent: the layers before it attend fully
                max_window_layers=sliding.index(True) if any(sliding) else self.num_hidden_layers,
                layer_types=["sliding_attention" if s else "full_attention" for s in sliding],
            )
        if dtype is not None:
            out["dtype"] = dtype
        return out


def _gemma3_text_tower(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """The text tower's config of a multimodal Gemma-3 (Gemma3ForConditionalGeneration): its text_config, with the
    special token ids, which such configs keep at the top level."""
    text = hf.get("text_config")
    if not isinstance(text, dict):
        raise ConfigError(f"{source}: model_type='gemma3' (multimodal) without a text_config")
    log.warning("%s: a multimodal Gemma-3; jaxadapt loads its text tower (language_model) and ignores the vision "
                "tower, and exports a text-only Gemma3ForCausalLM", source)
    tokens = {k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in hf}
    return {**tokens, **text, "model_type": "gemma3_text"}


def _gemma_config(hf: dict[str, Any], source: str) -> dict[str, Any]:
    """A Gemma config with HF's class defaults filled in, the per-layer attention kinds spelled out (HF derives them
    from a pattern when absent) and Gemma-3's per-kind RoPE parameters flattened into rope_parameters (the full
    layers') and rope_local_theta (the sliding ones')."""
    mt = hf["model_type"]
    if hf.get("use_bidirectional_attention"):
        raise ConfigError(f"{source}: use_bidirectional_attention=true (an encoder variant) is not supported")
    out = {**GEMMA_DEFAULTS[mt], **{k: v for k, v in hf.items() if v is not None or k.endswith("softcapping")}}
    if not out.get("layer_types"):
        every = 2 if mt == "gemma2" else int(out["sliding_window_pattern"])
        out["layer_types"] = ["sliding_attention" if (i + 1) % every else "full_attention"
                              for i in range(out["num_hidden_layers"])]
    if mt == "gemma3_text":
        rope = dict(out.get("rope_parameters") or {})
        if "full_attention" in rope or "sliding_attention" in rope:
            local = dict(rope.get("sliding_attention") or {})
            if local.get("rope_type", "default") != "default":
                raise ConfigError(f"{source}: rope_parameters.sliding_attention.rope_type={local['rope_type']!r} is "
                                  "not supported; expected 'default'")
            out["rope_parameters"] = dict(rope.get("full_attention") or {})
            out["rope_local_theta"] = float(local.get("rope_theta", out["rope_local_base_freq"]))
        else:
            out["rope_local_theta"] = float(out["rope_local_base_freq"])
    return out


def _attention_layers(hf: dict[str, Any], source: str) -> tuple[int | None, tuple[str, ...]]:
    """(sliding window, per-layer kinds or () when all layers are alike). Gemma mixes full and sliding layers by
    design; Qwen2/Qwen3 do where use_sliding_window is set and max_window_layers < num_hidden_layers (the layers
    from max_window_layers on slide) or layer_types says so."""
    window = hf.get("sliding_window")
    mt = hf["model_type"]
    if mt in GEMMA_FAMILIES:
        return int(window), tuple(hf["layer_types"])
    if mt == "llama" or window is None:
        return None, ()
    if mt == "mistral":
        return int(window), ()
    # qwen2, qwen3: a window only where use_sliding_window is set, and then per layer_types / max_window_layers.
    layer_types = hf.get("layer_types")
    if layer_types is None:
        if not hf.get("use_sliding_window", False):
            return None, ()
        n, first_full = hf["num_hidden_layers"], hf.get("max_window_layers", hf["num_hidden_layers"])
        layer_types = ["full_attention" if i < first_full else "sliding_attention" for i in range(n)]
    kinds = set(layer_types)
    if kinds == {"full_attention"}:
        return None, ()
    if kinds == {"sliding_attention"}:
        return int(window), ()
    return int(window), tuple(layer_types)


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))
