"""Training-step throughput: jaxadapt (full, LoRA) vs transformers (full) and transformers + peft (LoRA), float32,
SmolLM2-135M shapes, batch 4 x 256, AdamW.

    .venv/bin/python scripts/bench/train.py [--batch 4] [--seq 256] [--steps 3] [--warmup 1] [--logits-chunk 0]
        [--rounds 1]

Both load the real SmolLM2-135M-Instruct weights (transformers ran ~30x slower on randomly initialised
weights here, which would flatter jaxadapt). LoRA is r=8, alpha=32 on all 7 projections in both
implementations; both clip the gradient norm at 1.0 (jaxadapt's default). Each implementation runs in its own
process with all CPU threads; the script prints tokens/s (median step), jaxadapt's MFU against the measured
matmul ceiling, peak RSS and the jaxadapt / transformers ratios. Goals on CPU: >= 1.2x full, >= 1.3x LoRA.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_rounds, emit, median_seconds, peak_rss_mb, print_rounds, print_table, run_worker  # noqa: E402

PRESET = "smollm2-135m"
RANK, ALPHA, LR = 8, 32.0, 1e-4
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IMPLS = ("jaxadapt-full", "hf-full", "jaxadapt-lora", "hf+peft-lora")


def jax_worker(cfg, mode: str, ids, warmup: int, steps: int, logits_chunk: int = 0) -> dict:
    import jax
    import numpy as np

    from jaxadapt.assets import smollm2_dir
    from jaxadapt.io.hf import load_pretrained
    from jaxadapt.perf import measured_matmul_flops, train_flops_per_token
    from jaxadapt.sharding import make_mesh
    from jaxadapt.train.config import LoraConfig, ModelSection, OptimConfig, RunConfig, TrainConfig
    from jaxadapt.train.lora import add_lora
    from jaxadapt.train.step import build_engine, shard_batch

    b, t = ids.shape[0], ids.shape[1] - 1
    rc = RunConfig(model=ModelSection(path=PRESET), optim=OptimConfig(learning_rate=LR),
                   train=TrainConfig(trainable=mode, steps=1000, batch_size=b, seq_len=t, logits_chunk=logits_chunk),
                   lora=LoraConfig(rank=RANK, alpha=ALPHA, targets=TARGETS))
    model = load_pretrained(smollm2_dir())
    if mode == "lora":
        add_lora(model, rc.lora)
    engine, state = build_engine(model, rc, make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    ones = np.ones((b, t), np.int32)
    host = {"input_ids": ids[:, :-1].astype(np.int32), "targets": ids[:, 1:].astype(np.int32),
            "loss_mask": ones.astype(np.float32), "segment_ids": ones, "positions": ones * np.arange(t, dtype=np.int32)}
    batch = shard_batch(host, engine, 1)
    holder = [state]

    def step():
        holder[0], m = engine.step(holder[0], batch)
        m["loss"].block_until_ready()

    sec = median_seconds(step, warmup=warmup, iters=steps)
    tps = b * t / sec
    ceiling = measured_matmul_flops()
    flops = train_flops_per_token(cfg, t, engine.trainable_matmul_params(holder[0]))
    return {"tokens_per_s": tps, "mfu": tps * flops / ceiling, "ceiling_gflops": ceiling / 1e9}


def hf_worker(cfg, mode: str, ids, warmup: int, steps: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from jaxadapt.assets import smollm2_dir

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), dtype=torch.float32).train()
    if mode == "lora":
        from peft import LoraConfig as PeftLoraConfig, get_peft_model

        model = get_peft_model(model, PeftLoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                                     target_modules=list(TARGETS)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    x = torch.tensor(ids[:, :-1], dtype=torch.long)
    y = torch.tensor(ids[:, 1:], dtype=torch.long)

    def step():
        logits = model(input_ids=x, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    sec = median_seconds(step, warmup=warmup, iters=steps)
    return {"tokens_per_s": ids.shape[0] * (ids.shape[1] - 1) / sec}


def worker(impl: str, batch: int, seq: int, warmup: int, steps: int, logits_chunk: int) -> None:
    import numpy as np

    from jaxadapt.config.presets import model_preset

    cfg = model_preset(PRESET)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq + 1))
    mode = "lora" if impl.endswith("lora") else "full"
    if impl.startswith("jaxadapt"):
        out = jax_worker(cfg, mode, ids, warmup, steps, logits_chunk)
    else:
        out = hf_worker(cfg, mode, ids, warmup, steps)
    emit({"impl": impl, **out, "peak_rss_mb": peak_rss_mb()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="timed steps (the median is reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (the jit compile is one)")
    ap.add_argument("--logits-chunk", type=int, default=0, help="jaxadapt's train.logits_chunk (0: all at once)")
    add_rounds(ap)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    args = ("--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps), "--warmup", str(a.warmup),
            "--logits-chunk", str(a.logits_chunk))
    if a.worker:
        return worker(a.worker, a.batch, a.seq, a.warmup, a.steps, a.logits_chunk)
    ratios: dict[str, list[float]] = {}
    for r in range(a.rounds):
        rows = {impl: run_worker(__file__, impl, *args) for impl in IMPLS}
        print(f"{f'round {r + 1}: ' if a.rounds > 1 else ''}train step (AdamW), {PRESET} shapes, float32, batch "
              f"{a.batch} x {a.seq}, {os.cpu_count()} CPU threads, median of {a.steps} steps after {a.warmup} "
              "warmup; MFU against each worker's measured matmul ceiling")
        print_table(list(rows.values()), [("impl", "impl", "s"), ("tokens_per_s", "tokens/s", ".1f"),
                                          ("mfu", "MFU", ".1%"), ("ceiling_gflops", "ceiling GF/s", ".0f"),
                                          ("peak_rss_mb", "peak RSS MB", ".0f")])
        for mode, hf, goal in (("full", "hf-full", 1.2), ("lora", "hf+peft-lora", 1.3)):
            ratio = rows[f"jaxadapt-{mode}"]["tokens_per_s"] / rows[hf]["tokens_per_s"]
            ratios.setdefault(f"jaxadapt / {hf}", []).append(ratio)
            print(f"ratio jaxadapt / {hf}: {ratio:.2f}x (goal >= {goal}x: {'met' if ratio >= goal else 'NOT met'})")
    print_rounds(ratios)

if __name__ == "__main__":
    main()
