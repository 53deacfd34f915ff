"""One command for whatever accelerator is at hand: training steps of Llama-3.2-1B's shapes with random weights (LoRA,
then full), batch sizes swept until memory runs out, then greedy decoding at batch 1 and 32.

    python scripts/bench/device.py [--seq 2048] [--batches 4,8,16] [--modes lora,full] [--steps 5] [--remat none]
                                   [--attention auto] [--decode-new 128] [--budget-s 240] [--dry-run]
    python scripts/bench/device.py --check-attention     # cuDNN vs XLA attention against a float32 reference

Mixed precision as a run configures it (model.param_dtype float32, model.compute_dtype bfloat16): float32 master
weights and AdamW moments, bfloat16 matmuls, float32 logits and loss. Prints per (mode, batch): tokens/s (median
step of --steps after a compiling one), MFU against the device's published dense bf16 peak (jaxadapt.perf
PEAK_FLOPS), step time and the device's peak memory so far (LoRA runs first, so each full row's peak is its own
or larger). A batch that does not fit ends that mode's sweep; --budget-s stops starting new configurations. With
--dry-run (any machine) it prints what it would run and the FLOPs per token.
"""

from __future__ import annotations

import argparse
import json
import time

PRESET = "llama3.2-1b"


def _step_rows(args) -> list[dict]:
    import jax
    import numpy as np
    from flax import nnx

    from jaxadapt.config.presets import model_preset
    from jaxadapt.model import LlamaForCausalLM, Runtime
    from jaxadapt.perf import device_peak_flops, train_flops_per_token
    from jaxadapt.sharding import make_mesh
    from jaxadapt.train.config import LoraConfig, ModelSection, OptimConfig, RunConfig, TrainConfig
    from jaxadapt.train.lora import add_lora
    from jaxadapt.train.step import build_engine, resolve_attention_chunk, resolve_attention_impl, shard_batch

    cfg = model_preset(PRESET)
    device = jax.devices()[0]
    peak = device_peak_flops(device)
    mesh = make_mesh(1, 1, 1, devices=[device])
    rows, start = [], time.time()
    for mode in args.modes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            if time.time() - start > args.budget_s:
                print(f"budget of {args.budget_s} s spent: not starting {mode} batch {batch}", flush=True)
                return rows
            rc = RunConfig(model=ModelSection(path=PRESET, param_dtype="float32", compute_dtype="bfloat16",
                                              remat=args.remat, attention_impl=args.attention),
                           optim=OptimConfig(learning_rate=1e-4),
                           train=TrainConfig(trainable=mode, steps=1000, batch_size=batch, seq_len=args.seq),
                           lora=LoraConfig(rank=16, alpha=32.0))
            # as `train` does: XLA's attention in chunks where a layer's float32 scores would pass 1 GiB
            rt = Runtime(param_dtype="float32", compute_dtype="bfloat16", remat=args.remat,
                         attention_impl=resolve_attention_impl(rc),
                         attention_chunk=resolve_attention_chunk(rc, mesh, cfg))
            try:
                model = LlamaForCausalLM(cfg, rt, rngs=nnx.Rngs(0))
                if mode == "lora":
                    add_lora(model, rc.lora)
                engine, state = build_engine(model, rc, mesh)
                del model
                rng = np.random.default_rng(0)
                ids = rng.integers(0, cfg.vocab_size, (batch, args.seq + 1), dtype=np.int32)
                ones = np.ones((batch, args.seq), np.int32)
                host = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": ones.astype(np.float32),
                        "segment_ids": ones, "positions": ones * np.arange(args.seq, dtype=np.int32)}
                data = shard_batch(host, engine, 1)
                t0 = time.perf_counter()
                state, m = engine.step(state, data)
                float(m["loss"])
                compile_s = time.perf_counter() - t0
                times = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    state, m = engine.step(state, data)
                    float(m["loss"])
                    times.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 (XLA's out-of-memory error has no stable type)
                if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
                    print(f"{mode} batch {batch}: out of memory; the {mode} sweep ends here", flush=True)
                    break
                raise
            sec = sorted(times)[len(times) // 2]
            tps = batch * args.seq / sec
            flops = train_flops_per_token(cfg, args.seq, engine.trainable_matmul_params(state))
            stats = device.memory_stats() or {}
            row = {"mode": mode, "batch": batch, "seq": args.seq, "tokens_per_s": tps, "mfu": tps * flops / peak,
                   "step_ms": 1e3 * sec, "compile_s": compile_s,
                   "peak_gib": stats.get("peak_bytes_in_use", 0) / 2 ** 30, "loss": float(m["loss"])}
            rows.append(row)
            print(f"{mode:>5} batch {batch:>3} x {args.seq}: {tps:10.0f} tokens/s  MFU {row['mfu']:6.1%}  "
                  f"step {row['step_ms']:8.1f} ms  peak {row['peak_gib']:6.1f} GiB  (compile {compile_s:.0f} s, "
                  f"loss {row['loss']:.3f})", flush=True)
            del engine, state, data
    return rows


def _decode_rows(args) -> list[dict]:
    import numpy as np
    from flax import nnx

    from jaxadapt.config.presets import model_preset
    from jaxadapt.generate import generate_ids
    from jaxadapt.model import LlamaForCausalLM, Runtime

    cfg = model_preset(PRESET)
    model = LlamaForCausalLM(cfg, Runtime(param_dtype="bfloat16", compute_dtype="bfloat16"), rngs=nnx.Rngs(0))
    rows = []
    for batch in (1, 32):
        prompts = np.random.default_rng(1).integers(0, cfg.vocab_size, (batch, 32)).tolist()
        generate_ids(model, prompts, eos_ids=(), max_new_tokens=args.decode_new)  # compiles
        t0 = time.perf_counter()
        out = generate_ids(model, prompts, eos_ids=(), max_new_tokens=args.decode_new)
        sec = time.perf_counter() - t0
        assert all(len(r) == args.decode_new for r in out)
        rows.append({"decode_batch": batch, "tokens_per_s": batch * args.decode_new / sec})
        print(f"decode batch {batch:>2}: {batch * args.decode_new / sec:10.0f} tokens/s (bf16 weights, greedy, "
              f"{args.decode_new} new tokens after 32)", flush=True)
    return rows


def check_attention(seq: int = 512) -> list[dict]:
    """cuDNN's fused attention against XLA's on the same bf16 model: logits and the gradient of the loss, on packed
    rows (three documents each, segment ids and restarting positions), with and without a sliding window shorter
    than the documents. Prints each one's largest differences from a float32 XLA reference, relative to the values'
    scale, so cuDNN's error can be read against XLA's own bfloat16 error."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jaxadapt.config.presets import model_preset
    from jaxadapt.model import LlamaForCausalLM, Runtime

    rows = []
    for window in (None, 96):
        cfg = model_preset("smollm2-135m").replace(num_hidden_layers=4, sliding_window=window)
        bounds = (0, seq // 3, seq // 2 + 17, seq)
        seg = np.concatenate([np.full(b - a, i + 1) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))])
        pos = np.concatenate([np.arange(b - a) for a, b in zip(bounds, bounds[1:])])
        ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (4, seq + 1))
        x, y = jnp.asarray(ids[:, :-1]), jnp.asarray(ids[:, 1:])
        segment_ids, positions = jnp.asarray(np.tile(seg, (4, 1))), jnp.asarray(np.tile(pos, (4, 1)))
        out = {}
        kernels = (("f32", "xla", "float32"), ("xla", "xla", "bfloat16"), ("cudnn", "cudnn", "bfloat16"))
        for name, impl, dtype in kernels:
            model = LlamaForCausalLM(cfg, Runtime(compute_dtype=dtype, attention_impl=impl), rngs=nnx.Rngs(0))
            graphdef, params = nnx.split(model, nnx.Param)

            def loss(p):
                logits = nnx.merge(graphdef, p)(x, positions=positions, segment_ids=segment_ids)
                logp = jax.nn.log_softmax(logits.astype(jnp.float32))
                return -jnp.take_along_axis(logp, y[..., None], -1).mean(), logits

            (value, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
            out[name] = (np.asarray(logits, np.float32), float(value),
                         [np.asarray(g, np.float32) for g in jax.tree.leaves(grads)])
        ref_logits, ref_loss, ref_grads = out["f32"]
        for name in ("xla", "cudnn"):
            logits, value, grads = out[name]
            logit_err = float(np.abs(logits - ref_logits).max() / np.abs(ref_logits).max())
            grad_err = max(float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
                           for a, b in zip(grads, ref_grads))
            rows.append({"window": window, "attention": f"{name} bf16", "loss": value, "loss_f32": ref_loss,
                         "logits_rel": logit_err, "grad_rel": grad_err})
            print(f"window {window}, {name} bf16 vs xla f32: loss {value:.5f} vs {ref_loss:.5f}, logits max |diff| / "
                  f"max |logit| {logit_err:.2e}, gradients (worst leaf) {grad_err:.2e}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batches", default="4,8,16")
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--remat", default="none")
    ap.add_argument("--attention", default="auto", help="model.attention_impl: auto (cuDNN on a GPU), xla or cudnn")
    ap.add_argument("--decode-new", type=int, default=128, help="new tokens per decode row (0: no decode lines)")
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--check-attention", action="store_true", help="only compare cuDNN's attention with XLA's")
    args = ap.parse_args()
    if args.check_attention:
        print("RESULT " + json.dumps(check_attention()))
        return

    if args.dry_run:
        from jaxadapt.config.presets import model_preset
        from jaxadapt.perf import train_flops_per_token

        cfg = model_preset(PRESET)
        print(f"{PRESET}: {args.modes} x batches {args.batches} x seq {args.seq}, float32 params, bf16 compute, "
              f"remat {args.remat}; full-training FLOPs/token {train_flops_per_token(cfg, args.seq):.3e}")
        return
    import jax

    print(f"device: {jax.devices()[0].device_kind} (jax {jax.__version__})", flush=True)
    rows = _step_rows(args)
    if args.decode_new:
        rows += _decode_rows(args)
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
