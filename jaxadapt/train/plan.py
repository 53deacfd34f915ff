"""Capacity planning: compile the real train step ahead of time for a mesh that need not exist, and read the
per-device memory and FLOPs from XLA, before renting the machines.

The step is built by `build_step` from abstract trees (`abstract_model` under `nnx.eval_shape`), lowered with
ShapeDtypeStruct arguments that carry their shardings, and compiled: no parameter is ever allocated. The mesh
is simulated with host CPU devices (`--xla_force_host_platform_device_count`), which must be set before jax
starts, so the command runs the compile in a fresh interpreter (`python -m jaxadapt.train.plan`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from jaxadapt.errors import UserError

# Memory per device (GiB) of the accelerators a plan is usually made for.
DEVICE_MEMORY_GB = {"tpu-v4": 32, "tpu-v5e": 16, "tpu-v5p": 95, "tpu-v6e": 32, "a100-40gb": 40, "a100-80gb": 80,
                    "h100": 80, "h200": 141}


def check_args(trainable: str, batch: int, seq: int, dtype: str, remat: str, device: str,
               logits_chunk: int | str = "auto", attention_chunk: int | str = "auto",
               compute_dtype: str | None = None) -> None:
    """Reject bad input in the parent, before a subprocess and a compile are paid for."""
    from jaxadapt.model import REMAT_POLICIES
    from jaxadapt.train.config import TRAIN_DTYPES, Trainable

    try:
        rows = Trainable(trainable).rows
    except UserError as e:
        raise UserError(f"--trainable {e}") from None
    if rows == "new":
        raise UserError(f"--trainable {trainable!r}: plan supports full | lora | embeddings (or a '+'-union of "
                        "them); new_rows trains the same arrays as embeddings, plan that instead")
    for name, value in (("--batch", batch), ("--seq", seq)):
        if value < 1:
            raise UserError(f"{name}={value}: expected a positive integer")
    for name, value in (("--logits-chunk", logits_chunk), ("--attention-chunk", attention_chunk)):
        if value != "auto" and (value < 0 or (value and seq % value)):
            raise UserError(f"{name}={value}: expected 0 (no chunking) or a divisor of --seq={seq}")
    for name, value, allowed in (("--dtype", dtype, TRAIN_DTYPES),
                                 ("--compute-dtype", compute_dtype or dtype, TRAIN_DTYPES),
                                 ("--remat", remat, tuple(REMAT_POLICIES)),
                                 ("--device", device, tuple(DEVICE_MEMORY_GB))):
        if value not in allowed:
            raise UserError(f"{name} {value!r}: expected one of {', '.join(allowed)}")


def compile_plan(model: str, mesh: dict[str, int], trainable: str, batch: int, seq: int, dtype: str = "float32",
                 remat: str = "none", logits_chunk: int | str = "auto", attention_chunk: int | str = "auto",
                 compute_dtype: str | None = None) -> dict:
    """Compile the train step for `mesh` on this process's devices (the first data*fsdp*tensor of them) and
    return per-device memory (bytes) and FLOPs per step. `dtype` is model.param_dtype (the parameters and the AdamW
    moments), `compute_dtype` model.compute_dtype (default: `dtype`)."""
    import jax

    from jaxadapt.config.presets import model_preset
    from jaxadapt.sharding import make_mesh

    cfg = model_preset(model)
    n = math.prod(mesh.values())
    devices = jax.devices()
    if len(devices) < n:
        raise UserError(f"mesh {mesh} needs {n} devices, this process has {len(devices)}")
    rc = plan_run_config(model, trainable, batch, seq, dtype, remat, logits_chunk, attention_chunk, compute_dtype)
    return compile_step(rc, make_mesh(**mesh, devices=devices[:n]), cfg)[1]


def plan_run_config(model: str, trainable: str, batch: int, seq: int, dtype: str = "float32", remat: str = "none",
                    logits_chunk: int | str = "auto", attention_chunk: int | str = "auto",
                    compute_dtype: str | None = None):
    """The run config a plan compiles: the given settings, everything else (optimizer, LoRA rank) the defaults."""
    from jaxadapt.train.config import LoraConfig, ModelSection, RunConfig, TrainConfig

    return RunConfig(model=ModelSection(path=model, param_dtype=dtype, compute_dtype=compute_dtype or dtype,
                                        remat=remat, attention_chunk=attention_chunk),
                     train=TrainConfig(trainable=trainable, batch_size=batch, seq_len=seq, logits_chunk=logits_chunk),
                     lora=LoraConfig())


def compile_step(rc, mesh, cfg) -> tuple:
    """The train step of run config `rc` (objective clm) for model `cfg` on `mesh`, compiled from abstract arrays
    with the runtime `train` would use on these devices (jaxadapt.train.step.train_runtime: XLA's attention on the
    CPU of `jaxadapt plan`) -> (the executable, the plan: per-device memory in bytes and FLOPs per step). The
    executable also runs on a real state (scripts/bench/device.py measures it next to its plan)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxadapt.model import LlamaForCausalLM
    from jaxadapt.perf import train_flops_per_token
    from jaxadapt.train.lora import add_lora
    from jaxadapt.train.partition import split_trainable
    from jaxadapt.train.step import build_step, check_batch_divides, train_runtime, trainable_matmul_params

    check_batch_divides(rc, mesh)
    rt = train_runtime(rc, mesh, cfg)
    batch, seq, accum = rc.train.batch_size, rc.train.seq_len, rc.train.grad_accum

    def build():
        m = LlamaForCausalLM(cfg, rt, rngs=nnx.Rngs(0))
        if rc.train.trainable.lora:
            add_lora(m, rc.lora)
        return m

    graphdef, params, frozen = split_trainable(nnx.eval_shape(build), rc.train.trainable)
    params, frozen = nnx.to_pure_dict(params), nnx.to_pure_dict(frozen)
    parts = build_step(graphdef, params, frozen, rc, mesh)

    def with_sharding(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

    shape = (accum, batch // accum, seq)
    batch_arg = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=parts.batch_sharding)
                 for k in ("input_ids", "targets", "segment_ids", "positions")}
    batch_arg["loss_mask"] = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=parts.batch_sharding)
    compiled = parts.step_fn.lower(with_sharding(parts.abstract_state, parts.state_shardings),
                                   with_sharding(parts.abstract_frozen, parts.frozen_shardings), batch_arg).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    per_token = train_flops_per_token(cfg, seq, trainable_matmul_params(cfg, params, frozen))
    out = {"devices": mesh.size, "arguments": mem.argument_size_in_bytes, "outputs": mem.output_size_in_bytes,
           "aliased": mem.alias_size_in_bytes, "temps": mem.temp_size_in_bytes,
           "xla_flops_per_device": float((cost or {}).get("flops", 0.0)),
           "analytic_flops_per_step": per_token * batch * seq,
           "trainable_params": sum(int(x.size) for x in jax.tree.leaves(params)),
           "frozen_params": sum(int(x.size) for x in jax.tree.leaves(frozen)), "logits_chunk": parts.logits_chunk,
           "attention_chunk": rt.attention_chunk}
    # Donated state is aliased into the outputs: those bytes are counted once.
    out["total"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temps"]
    return compiled, out


def report(plan: dict, model: str, mesh: dict[str, int], trainable: str, batch: int, seq: int, dtype: str,
           remat: str, device: str, device_memory_gb: float, compute_dtype: str | None = None) -> str:
    fits = plan["total"] <= device_memory_gb * 1024 ** 3
    logits_chunk, attention_chunk = plan["logits_chunk"], plan["attention_chunk"]
    mesh_s = ",".join(f"{k}={v}" for k, v in mesh.items())
    return "\n".join([
        f"plan: {model}, mesh {mesh_s} ({plan['devices']} devices), trainable={trainable}, batch {batch} x {seq}, "
        + (f"{dtype}" if (compute_dtype or dtype) == dtype else f"{dtype} params, {compute_dtype} compute")
        + f", remat={remat}" + (f", logits in chunks of {logits_chunk} positions" if logits_chunk else "")
        + (f", attention in chunks of {attention_chunk} queries" if attention_chunk else ""),
        f"params: {plan['trainable_params'] / 1e6:,.1f}M trainable, {plan['frozen_params'] / 1e6:,.1f}M frozen",
        "per-device memory (XLA memory_analysis):",
        f"  arguments  {_size(plan['arguments'])}  (state + frozen params + batch)",
        f"  outputs    {_size(plan['outputs'])}  ({_size(plan['aliased']).strip()} aliased to the donated state)",
        f"  temps      {_size(plan['temps'])}  (activations, gradients, scratch)",
        f"  total      {_size(plan['total'])}  of {device_memory_gb:g} GiB ({device}): "
        + ("fits" if fits else "DOES NOT FIT"),
        f"FLOPs per step: analytic {plan['analytic_flops_per_step']:.3e} (jaxadapt.perf, all devices); "
        f"XLA cost_analysis {plan['xla_flops_per_device']:.3e} per device "
        "(XLA counts a scanned loop body once, so this undercounts the layers)",
    ] + ([] if (compute_dtype or dtype) == "float32" else [
        "note: XLA on CPU keeps bfloat16 activations in float32, so this over-predicts a bfloat16 step on an "
        "accelerator: an H200 peaked at 0.50-0.55x of this total for Llama-3.2-1B (README, Performance)"]))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:9.2f} {unit:<3}"
        n /= 1024


def plan_command(model: str, mesh_spec: str, trainable: str, batch: int, seq: int, dtype: str, remat: str,
                 device: str, device_memory_gb: float | None, logits_chunk: int | str = "auto",
                 attention_chunk: int | str = "auto", compute_dtype: str | None = None) -> str:
    """Validate, then compile in a subprocess with N simulated devices; the printable report."""
    from jaxadapt.config.presets import model_preset
    from jaxadapt.sharding import parse_mesh

    mesh = parse_mesh(mesh_spec)
    logits_chunk = _chunk_arg("--logits-chunk", logits_chunk, seq)
    attention_chunk = _chunk_arg("--attention-chunk", attention_chunk, seq)
    check_args(trainable, batch, seq, dtype, remat, device, logits_chunk, attention_chunk, compute_dtype)
    model_preset(model)  # an unknown preset or a missing file fails here, before the subprocess
    n = math.prod(mesh.values())
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={n}")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))
    args = json.dumps([model, mesh, trainable, batch, seq, dtype, remat, logits_chunk, attention_chunk,
                       compute_dtype])
    proc = subprocess.run([sys.executable, "-m", "jaxadapt.train.plan", args], capture_output=True, text=True,
                          env=env)
    last = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode or not last[0].startswith("{"):
        raise RuntimeError(f"plan subprocess failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(last[0])
    if "error" in result:
        raise UserError(result["error"])
    gb = device_memory_gb if device_memory_gb is not None else DEVICE_MEMORY_GB[device]
    return report(result, model, mesh, trainable, batch, seq, dtype, remat, device, gb, compute_dtype)


def _chunk_arg(name: str, value: int | str, seq: int) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name}={value}: expected auto, 0 or a divisor of --seq={seq}") from None


def _child(argv: list[str]) -> None:
    """The subprocess: compile and print one JSON line (a UserError becomes {"error": ...})."""
    try:
        out = compile_plan(*json.loads(argv[0]))
    except UserError as e:
        out = {"error": str(e)}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1:])
