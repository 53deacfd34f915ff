"""LoRA: attach factors to the model's Linear modules, merge them, export them as a PEFT adapter.

The factors are stacked like every layer parameter: `lora_a` [layers, in, r], `lora_b` [layers, r, out], with
A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's default kaiming-uniform) and B = 0, so the model is unchanged at step 0.
Layers outside `LoraConfig.layers` get scale 0 (their factors exist, receive zero gradient and are not exported).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxadapt.errors import UserError
from jaxadapt import fs
from jaxadapt.io.atomic import atomic_dir
from jaxadapt.io.safetensors import write_safetensors
from jaxadapt.model import Linear, LlamaForCausalLM, LoRAParam
from jaxadapt.params import LORA_PARENTS as PARENTS, LORA_SPECS
from jaxadapt.train.config import LoraConfig


def target_modules(model: LlamaForCausalLM, targets) -> dict[str, Linear]:
    layers = model.model.layers
    return {t: getattr(getattr(layers, PARENTS[t]), t) for t in targets}


def adapted_layers(cfg: LoraConfig, num_layers: int) -> list[int]:
    if cfg.layers is None:
        return list(range(num_layers))
    out = []
    for i in cfg.layers:
        j = i + num_layers if i < 0 else i
        if not 0 <= j < num_layers:
            raise UserError(f"lora.layers: layer {i} does not exist (the model has {num_layers} layers)")
        out.append(j)
    return sorted(set(out))


def lora_scale(cfg: LoraConfig) -> float:
    return cfg.alpha / (math.sqrt(cfg.rank) if cfg.rslora else cfg.rank)


def add_lora(model: LlamaForCausalLM, cfg: LoraConfig, seed: int = 0) -> None:
    """Attach LoRA factors in place (on the devices and with the shardings of the kernels they adapt)."""
    n = model.config.num_hidden_layers
    on = np.zeros((n,), np.float32)
    on[adapted_layers(cfg, n)] = lora_scale(cfg)
    key = jax.random.key(seed)
    for i, (name, lin) in enumerate(sorted(target_modules(model, cfg.targets).items())):
        kernel = lin.kernel[...]
        _, din, dout = kernel.shape
        bound = 1.0 / math.sqrt(din)
        a = jax.random.uniform(jax.random.fold_in(key, i), (n, din, cfg.rank), jnp.float32, -bound, bound)
        lin.lora_a = LoRAParam(a.astype(kernel.dtype))
        lin.lora_b = LoRAParam(jnp.zeros((n, cfg.rank, dout), kernel.dtype))
        lin.lora_scale = nnx.Variable(jnp.asarray(on))
        lin.lora_dropout = float(cfg.dropout)


def has_lora(model: LlamaForCausalLM) -> bool:
    return any(isinstance(v, LoRAParam) for _, v in nnx.iter_graph(model))


def lora_delta(lin: Linear) -> jax.Array:
    """scale * A @ B per layer, [layers, in, out] float32: what a module's factors add to its kernel (a layer outside
    `lora.layers` adds zeros). Merging (merge_lora) and propagation (lep/propagate.py) add this same update."""
    delta = jnp.einsum("lir,lro->lio", lin.lora_a[...].astype(jnp.float32), lin.lora_b[...].astype(jnp.float32))
    return delta * lin.lora_scale[...][:, None, None]


def merge_lora(model: LlamaForCausalLM) -> None:
    """kernel += lora_delta for every adapted module, then drop the factors (in place)."""
    for lin in target_modules(model, PARENTS).values():
        if lin.lora_a is None:
            continue
        kernel = lin.kernel[...]
        lin.kernel = nnx.Param((kernel.astype(jnp.float32) + lora_delta(lin)).astype(kernel.dtype))
        lin.lora_a = lin.lora_b = lin.lora_scale = None
        lin.lora_dropout = 0.0


def save_peft_adapter(model: LlamaForCausalLM, cfg: LoraConfig, out_dir, *, embeddings: bool = False,
                      base_model: str | None = None) -> Path:
    """Write adapter_config.json + adapter_model.safetensors that `peft.PeftModel.from_pretrained` loads.

    `embeddings=True` also saves the full input embeddings and (untied) LM head as PEFT `modules_to_save`
    (ChocoLlama's lora+embeddings recipe); a tied head is kept tied to the saved embeddings.
    """
    mods = {k: v for k, v in target_modules(model, cfg.targets).items() if v.lora_a is not None}
    if not mods:
        raise UserError("the model has no LoRA factors to export")
    layers = adapted_layers(cfg, model.config.num_hidden_layers)
    specs, arrays = [], {}
    for name, lin in sorted(mods.items()):
        a, b = np.asarray(jax.device_get(lin.lora_a[...])), np.asarray(jax.device_get(lin.lora_b[...]))
        for i in layers:
            prefix = "base_model.model." + LORA_SPECS[name].hf_name(i).removesuffix(".weight")
            arrays[f"{prefix}.lora_A.weight"] = a[i].T  # PEFT: [r, in]
            arrays[f"{prefix}.lora_B.weight"] = b[i].T  # PEFT: [out, r]
    modules_to_save = None
    if embeddings:
        arrays["base_model.model.model.embed_tokens.weight"] = np.asarray(
            jax.device_get(model.model.embed_tokens.embedding[...]))
        modules_to_save = ["embed_tokens"]
        if model.lm_head is not None:
            arrays["base_model.model.lm_head.weight"] = np.asarray(jax.device_get(model.lm_head.kernel[...])).T
            modules_to_save.append("lm_head")
        else:  # PEFT ties the head's copy to the embeddings' (ensure_weight_tying below) and loads both
            arrays["base_model.model.lm_head.weight"] = arrays["base_model.model.model.embed_tokens.weight"]
    for k, v in arrays.items():
        specs.append((k, v.shape, v.dtype))
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.rank, "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout, "use_rslora": cfg.rslora, "target_modules": sorted(mods), "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layers_to_transform": None if cfg.layers is None else layers, "modules_to_save": modules_to_save,
        "base_model_name_or_path": base_model,
    }
    if embeddings and model.lm_head is None:
        # a tied head must read the saved embeddings too: PEFT otherwise keeps it on the base model's copy
        config["ensure_weight_tying"] = True
    with atomic_dir(out_dir) as tmp:
        write_safetensors(tmp / "adapter_model.safetensors", specs, arrays.__getitem__)
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return fs.path(out_dir)
