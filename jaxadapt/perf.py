"""Analytic FLOPs and model FLOPs utilisation (MFU).

FLOPs per token, forward pass (one multiply-add = 2 FLOPs):
    2 * N_matmul                    every weight matrix once (q,k,v,o, gate,up,down per layer, and the LM head;
                                    the embedding lookup is free)
  + 4 * layers * seq * q_dim        attention scores QK^T and the weighted sum AV over `seq` keys; counted
                                    without the causal discount, the convention of PaLM / MaxText MFU
Training (forward + backward) = 3x forward. Frozen weights still cost their backward activation gradient but
not their weight gradient, so LoRA/embedding-only training is 2x forward for frozen matmuls plus 3x for the rest;
`train_flops_per_token` takes the trainable share into account.
MFU = FLOPs per token x tokens/s / peak FLOP/s of the device kind.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp

from jaxadapt.fs import cache_dir
from jaxadapt.config import ModelConfig

# Dense bf16 peak per chip (FLOP/s), from the vendors' spec sheets.
PEAK_FLOPS = {
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,  # v5e
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,  # v6e (Trillium)
    "tpu v6e": 918e12,
    "nvidia a100": 312e12,
    "nvidia h100": 989e12,
    "nvidia h200": 989e12,
}


def matmul_params(cfg: ModelConfig) -> int:
    per_layer = cfg.hidden_size * (cfg.q_dim + 2 * cfg.kv_dim) + cfg.q_dim * cfg.hidden_size
    per_layer += 3 * cfg.hidden_size * cfg.intermediate_size
    return cfg.num_hidden_layers * per_layer + cfg.hidden_size * cfg.vocab_size


def forward_flops_per_token(cfg: ModelConfig, seq: int) -> float:
    return 2.0 * matmul_params(cfg) + 4.0 * cfg.num_hidden_layers * seq * cfg.q_dim


def train_flops_per_token(cfg: ModelConfig, seq: int, trainable_matmul_params: int | None = None) -> float:
    """3x forward when everything trains; frozen matmuls skip their weight gradient (2x forward)."""
    fwd = forward_flops_per_token(cfg, seq)
    if trainable_matmul_params is None:
        return 3.0 * fwd
    frozen = matmul_params(cfg) - trainable_matmul_params
    return 3.0 * fwd - 2.0 * frozen


def device_peak_flops(device=None, cpu_peak: float | None = None) -> float:
    """Peak FLOP/s of one device: the table for TPUs/GPUs; for CPU the given value or a matmul calibration."""
    device = device or jax.devices()[0]
    kind = device.device_kind.lower()
    for name, peak in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
        if name in kind:
            return peak
    if device.platform == "cpu":
        return cpu_peak or measured_matmul_flops()
    raise ValueError(f"unknown device kind {device.device_kind!r}: pass its peak FLOP/s explicitly")


_CALIBRATED: dict[str, float] = {}


def measured_matmul_flops(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
    """The best FLOP/s of a jitted n x n matmul on the default device, measured once per process and remembered
    across runs (the cache's perf/matmul-peak.json keeps the best seen on this machine and device setup). A peak
    measured while other work shares the CPU is too low and would put MFU above 100%; the best-ever is not."""
    key = f"{n}-{jnp.dtype(dtype).name}-{jax.device_count()}dev-{os.cpu_count()}cpu"
    if key not in _CALIBRATED:
        a = jnp.ones((n, n), dtype)
        f = jax.jit(lambda x: x @ x)
        f(a).block_until_ready()
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            f(a).block_until_ready()
            best = min(best, time.perf_counter() - t)
        store = cache_dir("perf") / "matmul-peak.json"
        try:
            seen = json.loads(store.read_text())
        except (OSError, ValueError):
            seen = {}
        _CALIBRATED[key] = max(2.0 * n**3 / best, float(seen.get(key, 0.0)))
        if _CALIBRATED[key] > seen.get(key, 0.0):
            tmp = store.with_name(f".{store.name}.{os.getpid()}")
            tmp.write_text(json.dumps({**seen, key: _CALIBRATED[key]}, indent=2))
            os.replace(tmp, store)
    return _CALIBRATED[key]
