"""The one parameter-spec table: every array the model holds, named once.

Each `ParamSpec` says, for one parameter: its path in the nnx model, its HF tensor name and layout, its logical axes
(sharding), whether LoRA may adapt it, its GGUF (llama.cpp) name, and for which configs it exists (biases, an untied
LM head, per-head q/k norms). Everything that needs to know a parameter's identity is derived from `PARAMS`:
- `jaxadapt.sharding.PARAM_RULES` (path -> logical axes), LoRA factors included (`factor_rules`),
- the HF import/export layout (`jaxadapt.io.hf.hf_layout`: name, transpose, stacking of layers),
- the LoRA targets and their parent modules (`LORA_TARGETS`, `LORA_PARENTS`),
- the GGUF tensor names and llama.cpp's RoPE row order (`jaxadapt.io.gguf`).
A model leaf without a spec is an error (no sharding rule, no HF name), never silently skipped.

Parameters under `model/layers/` are stacked: the model holds one array with a leading `layers` axis; HF holds
one tensor per layer (`{i}` in the names). Shapes come from the model itself (`abstract_model`), not from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from jaxadapt.config.model import ModelConfig

LAYERS_PREFIX = "model/layers/"


def always(cfg: ModelConfig) -> bool:
    return True


def untied(cfg: ModelConfig) -> bool:
    return not cfg.tie_word_embeddings


def qkv_bias(cfg: ModelConfig) -> bool:
    return cfg.attention_bias


def o_bias(cfg: ModelConfig) -> bool:
    return cfg.o_proj_bias


def mlp_bias(cfg: ModelConfig) -> bool:
    return cfg.mlp_bias


def qk_norm(cfg: ModelConfig) -> bool:
    return cfg.qk_norm


def gemma(cfg: ModelConfig) -> bool:
    return cfg.gemma


def not_gemma(cfg: ModelConfig) -> bool:
    return not cfg.gemma


@dataclass(frozen=True)
class ParamSpec:
    path: str  # '/'-joined nnx path from the LlamaForCausalLM root, e.g. "model/layers/self_attn/q_proj/kernel"
    hf: str  # HF tensor name; "{i}" stands for the layer index of a stacked parameter
    axes: tuple[str | None, ...]  # logical axes of jaxadapt's array (keys of jaxadapt.sharding.LOGICAL_TO_MESH)
    gguf: str | None = None  # llama.cpp's tensor name ("{i}": the layer); None: not importable from GGUF
    transpose: bool = False  # HF stores the transpose: torch Linear weights are [out, in], our kernels [in, out]
    # ModelConfig attribute: the HF tensor's rows are this many heads of RoPE'd dimensions (q/k projections).
    # llama.cpp interleaves the two rotate-half halves of each such head in Llama GGUFs (jaxadapt.io.gguf).
    rope_heads: str | None = None
    lora: bool = False  # the kernel of a Linear that LoRA may adapt (its factors follow these axes)
    when: Callable[[ModelConfig], bool] = always  # whether a model of this config has the parameter

    def __post_init__(self):
        if self.stacked and self.axes[:1] != ("layers",):
            raise ValueError(f"{self.path}: a stacked parameter's first logical axis is 'layers', got {self.axes}")
        if self.stacked != ("{i}" in self.hf):
            raise ValueError(f"{self.path}: the HF name {self.hf!r} must hold '{{i}}' exactly for stacked parameters")
        if self.lora and not (self.path.endswith("/kernel") and len(self.axes) == 3):
            raise ValueError(f"{self.path}: only a stacked Linear kernel can be a LoRA target")

    @property
    def stacked(self) -> bool:
        """One array over all layers (leading `layers` axis), one HF tensor per layer."""
        return self.path.startswith(LAYERS_PREFIX)

    @property
    def module(self) -> str:
        """The module holding the parameter: 'q_proj' for model/layers/self_attn/q_proj/kernel."""
        return self.path.split("/")[-2]

    @property
    def parent(self) -> str:
        """The module holding `module` inside a decoder layer: 'self_attn' for q_proj."""
        return self.path.split("/")[-3]

    @property
    def rule(self) -> str:
        """The regex that `jaxadapt.sharding` matches at the end of a '/'-joined leaf path. Stacked parameters match
        from `layers/` on: a scanned layer's own params are named `layers/<in-layer path>` (constrain_layer), and
        other trees (optimizer moments, LoRA-only trees) put their own prefixes in front."""
        return _suffix_rule(self.path[len("model/"):] if self.stacked else self.path)

    def hf_name(self, layer: int | None = None) -> str:
        return self.hf.format(i=layer)


def _suffix_rule(suffix: str) -> str:
    return r"(^|/)" + re.escape(suffix) + "$"


def _linear(parent: str, name: str, din: str, dout: str, gguf: str, bias, rope_heads: str | None = None):
    """The kernel and the optional bias of one Linear of a decoder layer."""
    path, hf, gg = f"{LAYERS_PREFIX}{parent}/{name}", f"model.layers.{{i}}.{parent}.{name}", f"blk.{{i}}.{gguf}"
    return (ParamSpec(f"{path}/kernel", f"{hf}.weight", ("layers", din, dout), f"{gg}.weight", transpose=True,
                      rope_heads=rope_heads, lora=True),
            ParamSpec(f"{path}/bias", f"{hf}.bias", ("layers", dout), f"{gg}.bias", rope_heads=rope_heads, when=bias))


def _norm(path: str, hf: str, gguf: str, when=always) -> ParamSpec:
    stacked = path.startswith(LAYERS_PREFIX)
    return ParamSpec(path, hf, ("layers", "norm") if stacked else ("norm",), gguf, when=when)


# Every parameter of every supported family. Order: top-level parameters, then one layer's (HF's own order).
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model/embed_tokens/embedding", "model.embed_tokens.weight", ("vocab", "embed"), "token_embd.weight"),
    _norm("model/norm/weight", "model.norm.weight", "output_norm.weight"),
    ParamSpec("lm_head/kernel", "lm_head.weight", ("embed", "vocab"), "output.weight", transpose=True, when=untied),
    *_linear("self_attn", "q_proj", "embed", "heads", "attn_q", qkv_bias, rope_heads="num_attention_heads"),
    *_linear("self_attn", "k_proj", "embed", "kv_heads", "attn_k", qkv_bias, rope_heads="num_key_value_heads"),
    *_linear("self_attn", "v_proj", "embed", "kv_heads", "attn_v", qkv_bias),
    *_linear("self_attn", "o_proj", "heads", "embed", "attn_output", o_bias),
    # Qwen3, Gemma-3: RMSNorm over each head's head_dim of q and k, after the projection, before RoPE. Not LoRA targets.
    _norm(f"{LAYERS_PREFIX}self_attn/q_norm/weight", "model.layers.{i}.self_attn.q_norm.weight",
          "blk.{i}.attn_q_norm.weight", when=qk_norm),
    _norm(f"{LAYERS_PREFIX}self_attn/k_norm/weight", "model.layers.{i}.self_attn.k_norm.weight",
          "blk.{i}.attn_k_norm.weight", when=qk_norm),
    *_linear("mlp", "gate_proj", "embed", "mlp", "ffn_gate", mlp_bias),
    *_linear("mlp", "up_proj", "embed", "mlp", "ffn_up", mlp_bias),
    *_linear("mlp", "down_proj", "mlp", "embed", "ffn_down", mlp_bias),
    _norm(f"{LAYERS_PREFIX}input_layernorm/weight", "model.layers.{i}.input_layernorm.weight",
          "blk.{i}.attn_norm.weight"),
    # Llama's post_attention_layernorm normalises the MLP's input; Gemma's the attention's output (llama.cpp names
    # them apart), and Gemma has two more norms around the MLP.
    _norm(f"{LAYERS_PREFIX}post_attention_layernorm/weight", "model.layers.{i}.post_attention_layernorm.weight",
          "blk.{i}.ffn_norm.weight", when=not_gemma),
    _norm(f"{LAYERS_PREFIX}post_attention_layernorm/weight", "model.layers.{i}.post_attention_layernorm.weight",
          "blk.{i}.post_attention_norm.weight", when=gemma),
    _norm(f"{LAYERS_PREFIX}pre_feedforward_layernorm/weight", "model.layers.{i}.pre_feedforward_layernorm.weight",
          "blk.{i}.ffn_norm.weight", when=gemma),
    _norm(f"{LAYERS_PREFIX}post_feedforward_layernorm/weight", "model.layers.{i}.post_feedforward_layernorm.weight",
          "blk.{i}.post_ffw_norm.weight", when=gemma),
)


def _check_table(specs: tuple[ParamSpec, ...]) -> None:
    """Two specs may share a path (a parameter named differently per family, under disjoint `when`s), but then
    with the same logical axes: sharding is by path alone."""
    axes: dict[str, tuple] = {}
    for s in specs:
        if axes.setdefault(s.path, s.axes) != s.axes:
            raise ValueError(f"{s.path}: specs disagree on the logical axes ({axes[s.path]} vs {s.axes})")


_check_table(PARAMS)

# LoRA: the Linears that may be adapted, by module name (lora.targets), and the layer module holding each.
LORA_SPECS: dict[str, ParamSpec] = {s.module: s for s in PARAMS if s.lora}
LORA_TARGETS: tuple[str, ...] = tuple(LORA_SPECS)
LORA_PARENTS: dict[str, str] = {name: s.parent for name, s in LORA_SPECS.items()}


def specs_for(cfg: ModelConfig) -> tuple[ParamSpec, ...]:
    """The specs of the parameters a model of `cfg` holds."""
    return tuple(s for s in PARAMS if s.when(cfg))


def check_paths(cfg: ModelConfig, paths) -> None:
    """The model's parameter paths are exactly those the table gives `cfg`: a parameter without a spec (or a spec
    without a parameter) is a bug in jaxadapt, named here rather than found later as a missing tensor."""
    specs = specs_for(cfg)
    want, got = {s.path for s in specs}, set(paths)
    if len(want) != len(specs):
        raise ValueError(f"{cfg.model_type}: more than one spec in jaxadapt/params.py applies to one parameter")
    if got != want:
        raise ValueError(f"{cfg.model_type}: parameters without a spec in jaxadapt/params.py {sorted(got - want)}; "
                         f"specs without a parameter {sorted(want - got)}")


def factor_rules(spec: ParamSpec) -> list[tuple[str, tuple[str | None, ...]]]:
    """Sharding rules of the LoRA factors of a LoRA-target kernel: they follow the kernel's layout, with a `rank`
    axis that is never split: lora_a [layers, in, rank], lora_b [layers, rank, out], lora_scale [layers]."""
    layers, din, dout = spec.axes
    base = spec.path[len("model/"):].rsplit("/", 1)[0]
    return [(_suffix_rule(f"{base}/lora_a"), (layers, din, "rank")),
            (_suffix_rule(f"{base}/lora_b"), (layers, "rank", dout)),
            (_suffix_rule(f"{base}/lora_scale"), (layers,))]


def sharding_rules() -> list[tuple[str, tuple[str | None, ...]]]:
    """(regex matched at the end of a '/'-joined leaf path, logical axes), for every parameter and LoRA factor."""
    rules, seen = [], set()
    for s in PARAMS:
        if s.path not in seen:
            seen.add(s.path)
            rules.append((s.rule, s.axes))
    for s in LORA_SPECS.values():
        rules.extend(factor_rules(s))
    return rules
