"""One command for whatever accelerator is at hand: training steps of Llama-3.2-1B's shapes with random weights
(full fine-tuning, then LoRA), the batch doubled until memory or time runs out, each step's measured peak memory next
to `jaxadapt plan`'s prediction for it; then greedy decoding at batch 1 and 32. Sized for a short lease: --budget-s
(240 s) bounds the sweeps, compilation included (5-15 s per step on an H200), and decoding follows.

    python scripts/bench/device.py [--seq 2048] [--start 1 | --batches 4,8,16] [--modes full,lora] [--steps 5]
                                   [--remat none] [--attention auto] [--logits-chunk auto] [--decode-new 128]
                                   [--budget-s 240]
    python scripts/bench/device.py --dry-run [--device h200]   # any machine: the plans `jaxadapt plan` makes on CPU
    python scripts/bench/device.py --check-attention     # cuDNN (GPU) or splash (TPU) vs XLA attention against a
                                                         # float32 reference

Mixed precision as a run configures it (model.param_dtype float32, model.compute_dtype bfloat16; the policy is
spelled out in jaxadapt/train/step.py): float32 master weights and AdamW moments, bfloat16 matmuls, float32 logits
and loss. Each row's step is the executable that jaxadapt.train.plan.compile_step (what `jaxadapt plan` compiles)
built for this device, run on a real state; its plan, XLA's per-device memory for that executable, is printed next
to the measured peak with their ratio. Per (mode, batch) it prints tokens/s (median of --steps after a warm-up step),
MFU against the device's published dense bf16 peak (jaxadapt.perf.PEAK_FLOPS), step time, both memories and the
compile time. Each mode runs in a process of its own (JAX never resets a device's peak memory, and the batch only
grows within a mode), with up to 95% of the device's memory (XLA_PYTHON_CLIENT_MEM_FRACTION, unless set). The sweep
starts at --start, halves while that does not fit, then doubles until a batch runs out of memory or the mode's share
of --budget-s would be overrun; --batches runs a fixed list instead. --dry-run compiles the same steps on the CPU (a
few minutes for the 1B shapes) and prints their plans, doubling the batch until a plan passes --device's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PRESET = "llama3.2-1b"
MAX_BATCH = 4096
GIB = 2 ** 30


def _run_config(args, mode: str, batch: int):
    """One row's run config: the one `jaxadapt plan --trainable MODE --dtype float32 --compute-dtype bfloat16` compiles
    (LoRA r=8, default AdamW), with --attention."""
    import dataclasses

    from jaxadapt.train.plan import plan_run_config

    rc = plan_run_config(args.preset, mode, batch, args.seq, "float32", args.remat, args.logits_chunk, "auto",
                         "bfloat16")
    return dataclasses.replace(rc, model=dataclasses.replace(rc.model, attention_impl=args.attention))


def _next_batch(args, batch: int, fitted: bool, any_fitted: bool) -> int:
    """The batch after `batch` (0: stop): the next of --batches; else double after a fit, halve until a first one."""
    if args.batches:
        later = [b for b in args.batches if b > batch]
        return later[0] if fitted and later else 0
    if fitted:
        return batch * 2 if batch * 2 <= MAX_BATCH else 0
    return 0 if any_fitted else batch // 2


def _is_oom(e: Exception) -> bool:
    return "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()


def _train_row(args, cfg, mesh, device, peak_flops: float, mode: str, batch: int) -> dict | None:
    """Compile the plan's step for (mode, batch), run it on a random-weight state: the row, or None when it does not
    fit."""
    import numpy as np
    from flax import nnx

    from jaxadapt.model import LlamaForCausalLM
    from jaxadapt.perf import train_flops_per_token
    from jaxadapt.train.lora import add_lora
    from jaxadapt.train.plan import compile_step
    from jaxadapt.train.step import build_engine, shard_batch, train_runtime

    rc = _run_config(args, mode, batch)
    plan = None
    try:
        t0 = time.perf_counter()
        compiled, plan = compile_step(rc, mesh, cfg)
        compile_s = time.perf_counter() - t0
        model = LlamaForCausalLM(cfg, train_runtime(rc, mesh, cfg), rngs=nnx.Rngs(0))
        if rc.train.trainable.lora:
            add_lora(model, rc.lora)
        engine, state = build_engine(model, rc, mesh)
        del model
        ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, args.seq + 1), dtype=np.int32)
        ones = np.ones((batch, args.seq), np.int32)
        host = {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": ones.astype(np.float32),
                "segment_ids": ones, "positions": ones * np.arange(args.seq, dtype=np.int32)}
        data = shard_batch(host, engine, 1)
        times = []
        for _ in range(args.steps + 1):  # the first one warms up
            t0 = time.perf_counter()
            state, m = compiled(state, engine.frozen, data)
            loss = float(m["loss"])
            times.append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 (XLA's out-of-memory error has no stable type)
        if not _is_oom(e):
            raise
        said = f" (plan {plan['total'] / GIB:.1f} GiB)" if plan else ""
        print(f"{mode:>5} batch {batch:>3}: out of memory{said}", flush=True)
        return None
    sec = sorted(times[1:])[len(times[1:]) // 2]
    tps = batch * args.seq / sec
    flops = train_flops_per_token(cfg, args.seq, engine.trainable_matmul_params(state))
    measured = (device.memory_stats() or {}).get("peak_bytes_in_use", 0)
    row = {"mode": mode, "batch": batch, "seq": args.seq, "tokens_per_s": tps, "mfu": tps * flops / peak_flops,
           "step_ms": 1e3 * sec, "compile_s": compile_s, "peak_gib": measured / GIB, "plan_gib": plan["total"] / GIB,
           "peak_over_plan": measured / plan["total"], "loss": loss, "run_s": sum(times)}
    print(f"{mode:>5} batch {batch:>3} x {args.seq}: {tps:9.0f} tokens/s  MFU {row['mfu']:6.1%}  step "
          f"{row['step_ms']:7.1f} ms  peak {row['peak_gib']:6.1f} GiB  plan {row['plan_gib']:6.1f} GiB "
          f"({row['peak_over_plan']:.2f}x)  (compile {compile_s:.0f} s, loss {loss:.3f})", flush=True)
    return row


def _mode_rows(args) -> list[dict]:
    """One mode's sweep, in its own process (see the module docstring), until --deadline."""
    import jax

    from jaxadapt.config.presets import model_preset
    from jaxadapt.perf import device_peak_flops
    from jaxadapt.sharding import make_mesh

    cfg = model_preset(args.preset)
    device = jax.devices()[0]
    if args.child == args.modes.split(",")[0]:
        limit = (device.memory_stats() or {}).get("bytes_limit", 0) / GIB
        print(f"device: {device.device_kind} (jax {jax.__version__}), {limit:.0f} GiB for JAX", flush=True)
    peak_flops = device_peak_flops(device)
    mesh = make_mesh(1, 1, 1, devices=[device])
    rows, next_cost = [], 0.0
    batch = args.batches[0] if args.batches else args.start
    while batch:
        if time.time() + next_cost > args.deadline:
            print(f"{args.child}: its share of --budget-s is spent, not starting batch {batch}", flush=True)
            break
        t0 = time.time()
        row = _train_row(args, cfg, mesh, device, peak_flops, args.child, batch)
        if row is not None:
            rows.append(row)
            next_cost = time.time() - t0 + row["run_s"]  # the next batch's steps take about twice as long
        batch = _next_batch(args, batch, row is not None, bool(rows))
    return rows


def _decode_rows(args) -> list[dict]:
    import numpy as np
    from flax import nnx

    from jaxadapt.config.presets import model_preset
    from jaxadapt.generate import generate_ids
    from jaxadapt.model import LlamaForCausalLM, Runtime

    cfg = model_preset(args.preset)
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


def _in_children(args) -> tuple[list[dict], list[str]]:
    """Each mode, then decoding, in a process of its own: the rows, and what failed."""
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
    modes, start = args.modes.split(","), time.time()
    rows, failed = [], []
    for i, part in enumerate(modes + (["decode"] if args.decode_new else [])):
        extra = ["--child", part]
        if part != "decode":
            share = (args.budget_s - (time.time() - start)) / (len(modes) - i)
            extra += ["--deadline", str(time.time() + share)]
        proc = subprocess.Popen([sys.executable, __file__, *sys.argv[1:], *extra], stdout=subprocess.PIPE, text=True,
                                env=env)
        for line in proc.stdout:
            if line.startswith("ROWS "):
                rows += json.loads(line[5:])
            else:
                print(line, end="", flush=True)
        if proc.wait():
            print(f"{part}: its process failed (exit {proc.returncode})", flush=True)
            failed.append(part)
    return rows, failed


def _dry_run(args) -> list[dict]:
    """The plans of the steps a run would take, compiled on the CPU as `jaxadapt plan` does."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    from jaxadapt.config.presets import model_preset
    from jaxadapt.perf import train_flops_per_token
    from jaxadapt.sharding import make_mesh
    from jaxadapt.train.plan import DEVICE_MEMORY_GB, compile_step

    cfg = model_preset(args.preset)
    memory = DEVICE_MEMORY_GB[args.device]
    print(f"{args.preset}: {args.modes} x seq {args.seq}, float32 params and AdamW moments, bf16 compute, remat "
          f"{args.remat}; full-training FLOPs/token {train_flops_per_token(cfg, args.seq):.3e}; the plans (XLA on "
          f"CPU, as `jaxadapt plan` makes them) against {memory} GiB ({args.device}):", flush=True)
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    rows = []
    for mode in args.modes.split(","):
        batch, any_fit = (args.batches[0] if args.batches else args.start), False
        while batch:
            plan = compile_step(_run_config(args, mode, batch), mesh, cfg)[1]
            fits = plan["total"] <= memory * GIB
            any_fit |= fits
            rows.append({"mode": mode, "batch": batch, "seq": args.seq, "plan_bytes": plan["total"]})
            print(f"{mode:>5} batch {batch:>3} x {args.seq}: plan {plan['total'] / GIB:8.3f} GiB per device "
                  f"(arguments {plan['arguments'] / GIB:.2f}, temps {plan['temps'] / GIB:.2f}): "
                  + ("fits" if fits else "DOES NOT FIT"), flush=True)
            batch = _next_batch(args, batch, fits, any_fit)
    return rows


def check_attention(seq: int = 512) -> list[dict]:
    """The device's fused attention (cuDNN's on a GPU, splash on a TPU) against XLA's on the same bf16 model: logits
    and the gradient of the loss, on packed rows (three documents each, segment ids and restarting positions), with
    and without a sliding window shorter than the documents. Prints each one's largest differences from a float32
    XLA reference, relative to the values' scale, so the fused kernel's error can be read against XLA's own bfloat16
    error."""
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
        fused = "splash" if jax.devices()[0].platform == "tpu" else "cudnn"
        kernels = (("f32", "xla", "float32"), ("xla", "xla", "bfloat16"), (fused, fused, "bfloat16"))
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
        for name in ("xla", fused):
            logits, value, grads = out[name]
            logit_err = float(np.abs(logits - ref_logits).max() / np.abs(ref_logits).max())
            grad_err = max(float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
                           for a, b in zip(grads, ref_grads))
            rows.append({"window": window, "attention": f"{name} bf16", "loss": value, "loss_f32": ref_loss,
                         "logits_rel": logit_err, "grad_rel": grad_err})
            print(f"window {window}, {name} bf16 vs xla f32: loss {value:.5f} vs {ref_loss:.5f}, logits max |diff| / "
                  f"max |logit| {logit_err:.2e}, gradients (worst leaf) {grad_err:.2e}", flush=True)
    return rows


def _batches(text: str) -> list[int]:
    return sorted({int(b) for b in text.split(",")})


def _chunk(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=PRESET, help="model preset (configs/models), random weights")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--start", type=int, default=1, help="first batch of the sweep (halved while it does not fit)")
    ap.add_argument("--batches", type=_batches, default=None, help="a fixed list of batches instead, e.g. 4,8,16")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--remat", default="none")
    ap.add_argument("--attention", default="auto",
                    help="model.attention_impl: auto (cuDNN on a GPU, splash on a TPU), xla, cudnn or splash")
    ap.add_argument("--logits-chunk", type=_chunk, default="auto", help="train.logits_chunk: auto, 0 or a divisor "
                    "of --seq")
    ap.add_argument("--decode-new", type=int, default=128, help="new tokens per decode row (0: no decode lines)")
    ap.add_argument("--budget-s", type=float, default=240.0, help="seconds for the training sweeps, shared by the "
                    "modes; no batch starts that would overrun its mode's share")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--device", default="h200", help="with --dry-run: the accelerator whose memory (jaxadapt plan's "
                    "--device) ends the sweep")
    ap.add_argument("--check-attention", action="store_true",
                    help="only compare the fused attention (cuDNN, splash) with XLA's")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # a mode (or "decode") run in its own process
    ap.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.check_attention:
        print("RESULT " + json.dumps(check_attention()))
        return
    if args.dry_run:
        print("RESULT " + json.dumps(_dry_run(args)))
        return
    if args.child:
        print("ROWS " + json.dumps(_decode_rows(args) if args.child == "decode" else _mode_rows(args)), flush=True)
        return
    rows, failed = _in_children(args)
    print("RESULT " + json.dumps(rows))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
