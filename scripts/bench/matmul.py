"""Matmul throughput at the shapes of the training benchmark's step: XLA (what jaxadapt's jitted step calls) vs torch
(what transformers calls), float32, in one run.

    .venv/bin/python scripts/bench/matmul.py [--batch 4] [--seq 256] [--iters 10] [--rounds 2]

train.py compares whole steps; this isolates the one part neither implementation writes itself. For each weight
matrix of SmolLM2-135M it times the three products of a training step (forward x @ W, input gradient dY @ W.T,
weight gradient X.T @ dY) at batch x seq tokens, then adds them up the way a step does (x layers; the tied LM head
once) into "matmul seconds per step". That total is a floor under each implementation's step time: divided into
transformers' measured step time it bounds jaxadapt / transformers on this machine, however well jaxadapt fuses
the rest of its step.

Each side runs in its own process with all CPU threads (in one process, torch's OpenMP threads keep spinning after
each product and slow XLA's next one down). The processes alternate for --rounds rounds and each product keeps its
fastest time: on a shared machine noise only ever slows a product down, so the fastest is the kernel's own speed.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, print_table, run_worker  # noqa: E402

HIDDEN, KV, MLP, VOCAB, LAYERS = 576, 192, 1536, 49152, 30
# (name, in, out, how many per step): SmolLM2-135M's projections and its tied LM head.
WEIGHTS = (("q/o", HIDDEN, HIDDEN, 2 * LAYERS), ("k/v", HIDDEN, KV, 2 * LAYERS), ("gate/up", HIDDEN, MLP, 2 * LAYERS),
           ("down", MLP, HIDDEN, LAYERS), ("head", HIDDEN, VOCAB, 1))


def products(tokens: int, din: int, dout: int):
    """(name, lhs shape, rhs shape, transpose lhs, transpose rhs) of forward, input gradient, weight gradient."""
    return (("fwd", (tokens, din), (din, dout), False, False), ("dX", (tokens, dout), (din, dout), False, True),
            ("dW", (tokens, din), (tokens, dout), True, False))


def worker(impl: str, tokens: int, iters: int) -> None:
    import time

    import numpy as np

    if impl == "torch":
        import torch

        torch.set_num_threads(os.cpu_count())
    else:
        import jax
        import jax.numpy as jnp
    rng = np.random.default_rng(0)
    seconds = {}
    for name, din, dout, _ in WEIGHTS:
        for kind, a_shape, b_shape, ta, tb in products(tokens, din, dout):
            a, b = rng.standard_normal(a_shape, np.float32), rng.standard_normal(b_shape, np.float32)
            if impl == "torch":
                a, b = torch.from_numpy(a), torch.from_numpy(b)

                def run(a=a, b=b, ta=ta, tb=tb):
                    return (a.T if ta else a) @ (b.T if tb else b)
            else:
                f = jax.jit(lambda x, y, ta=ta, tb=tb: (x.T if ta else x) @ (y.T if tb else y))

                def run(f=f, a=jnp.asarray(a), b=jnp.asarray(b)):
                    return f(a, b).block_until_ready()
            run()  # compile / warm up
            best = float("inf")
            for _ in range(iters):
                t = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - t)
            seconds[f"{name} {kind}"] = best
    emit({"impl": impl, "seconds": seconds})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10, help="timed repeats per product and round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two processes")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    tokens = a.batch * a.seq
    if a.worker:
        return worker(a.worker, tokens, a.iters)
    best = {"xla": {}, "torch": {}}
    for _ in range(a.rounds):
        for impl in best:
            seconds = run_worker(__file__, impl, "--batch", str(a.batch), "--seq", str(a.seq), "--iters",
                                 str(a.iters))["seconds"]
            best[impl] = {k: min(v, best[impl].get(k, v)) for k, v in seconds.items()}
    rows, totals = [], {"xla": 0.0, "torch": 0.0}
    for name, din, dout, count in WEIGHTS:
        flops = 2.0 * tokens * din * dout
        for kind, *_ in products(tokens, din, dout):
            key = f"{name} {kind}"
            row = {"product": key, **{impl: flops / best[impl][key] / 1e9 for impl in best}}
            rows.append({**row, "ratio": row["xla"] / row["torch"]})
            for impl in best:
                totals[impl] += count * best[impl][key]
    print(f"float32 matmuls of one SmolLM2-135M training step, {tokens} tokens, {os.cpu_count()} CPU threads "
          f"(GFLOP/s, fastest of {a.rounds} x {a.iters})")
    print_table(rows, [("product", "product", "s"), ("xla", "XLA GF/s", ".0f"), ("torch", "torch GF/s", ".0f"),
                       ("ratio", "XLA / torch", ".2f")])
    print(f"matmul seconds per step: XLA {totals['xla']:.2f}, torch {totals['torch']:.2f} "
          f"(XLA / torch throughput {totals['torch'] / totals['xla']:.2f}x). jaxadapt's step takes at least the XLA "
          f"figure, so against a transformers step of S seconds (train.py) jaxadapt / transformers is at most "
          f"S / {totals['xla']:.2f}.")


if __name__ == "__main__":
    main()
