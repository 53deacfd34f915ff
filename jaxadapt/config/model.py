"""Model configuration: one frozen dataclass for every supported Llama-family architecture.

`ModelConfig.from_hf` reads a `transformers` config dict (config.json) and `to_hf` writes one back, so an
HF -> jaxadapt -> HF round trip keeps every field the architecture needs. Anything we cannot represent
exactly (an unknown rope type, per-layer sliding windows) is rejected here, before any weights are read.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxadapt.errors import UserError

# model_type -> the HF architecture class name written into config.json on export.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
QK_NORM_FAMILIES = ("qwen3",)  # RMSNorm over each head of q and k, before RoPE
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
    sliding_window: int | None = None  # every layer attends to at most this many keys (itself included)
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
        if self.hidden_act != "silu":
            raise ConfigError(f"hidden_act={self.hidden_act!r} is not supported; expected 'silu'")
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
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def inv_freq(self) -> np.ndarray:
        """RoPE inverse frequencies (float32, length head_dim/2), following HF's rope_type semantics."""
        dim = self.head_dim
        inv = 1.0 / (self.rope_theta ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))
        rope = self.rope_dict
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
        model_type = hf.get("model_type")
        if model_type not in ARCHITECTURES:
            raise ConfigError(
                f"{source}: model_type={model_type!r} is not supported; expected one of {sorted(ARCHITECTURES)}"
            )
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

        sliding = _sliding_window(hf, source)
        known = {f.name for f in dataclasses.fields(cls)} | {
            "rope_parameters", "rope_scaling", "architectures", "use_sliding_window", "max_window_layers",
            "layer_types", "transformers_version", "pretraining_tp", "use_cache", "attention_dropout",
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
                hidden_act=hf.get("hidden_act", "silu"),
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
        if self.model_type == "qwen2" and self.head_dim == self.hidden_size // self.num_attention_heads:
            del out["head_dim"]  # Qwen2Config derives it; writing it would differ from HF's own export
        if self.model_type in ("qwen2", "qwen3"):
            out.update(
                use_sliding_window=self.sliding_window is not None,
                sliding_window=self.sliding_window,
                max_window_layers=self.num_hidden_layers,
                layer_types=["sliding_attention" if self.sliding_window else "full_attention"]
                * self.num_hidden_layers,
            )
        if dtype is not None:
            out["dtype"] = dtype
        return out


def _sliding_window(hf: dict[str, Any], source: str) -> int | None:
    """The one window every layer uses, or None. Mixed full/sliding layers are rejected (layers are scanned)."""
    window = hf.get("sliding_window")
    mt = hf["model_type"]
    if mt == "llama" or window is None:
        return None
    if mt == "mistral":
        return int(window)
    # qwen2, qwen3: a window only where use_sliding_window is set, and then per layer_types / max_window_layers.
    layer_types = hf.get("layer_types")
    if layer_types is None:
        if not hf.get("use_sliding_window", False):
            return None
        n, first_full = hf["num_hidden_layers"], hf.get("max_window_layers", hf["num_hidden_layers"])
        layer_types = ["full_attention" if i < first_full else "sliding_attention" for i in range(n)]
    kinds = set(layer_types)
    if kinds == {"full_attention"}:
        return None
    if kinds == {"sliding_attention"}:
        return int(window)
    raise ConfigError(
        f"{source}: layer_types mixes full and sliding attention ({sorted(kinds)}); jaxadapt scans identical "
        "layers and supports one attention kind for all layers"
    )


def _jsonable(v: Any) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict))
