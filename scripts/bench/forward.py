"""Forward throughput: jaxadapt vs transformers (torch), float32, SmolLM2-135M shapes, batch 8 x 256.

    .venv/bin/python scripts/bench/forward.py [--batch 8] [--seq 256] [--iters 5]

Both load the real SmolLM2-135M-Instruct weights (transformers ran ~30x slower on randomly initialised
weights here, which would flatter jaxadapt). Each implementation runs in its own process with the
same number of threads; the script prints tokens/s, MFU against the measured matmul ceiling, peak RSS and the
jaxadapt / transformers ratio.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, median_seconds, peak_rss_mb, print_table, run_worker  # noqa: E402

PRESET = "smollm2-135m"


def worker(impl: str, batch: int, seq: int, iters: int) -> None:
    import numpy as np

    from jaxadapt.assets import smollm2_dir
    from jaxadapt.config.presets import model_preset
    from jaxadapt.perf import forward_flops_per_token, measured_matmul_flops

    cfg = model_preset(PRESET)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq))
    if impl == "jaxadapt":
        import jax
        import jax.numpy as jnp

        from jaxadapt.io.hf import load_pretrained

        model = load_pretrained(smollm2_dir())
        fwd = jax.jit(lambda m, i: m(i))
        x = jnp.asarray(ids, jnp.int32)
        sec = median_seconds(lambda: fwd(model, x).block_until_ready(), iters=iters)
    else:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(os.cpu_count())
        model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), dtype=torch.float32).eval()
        x = torch.tensor(ids)

        def step():
            with torch.no_grad():
                model(x, use_cache=False)

        sec = median_seconds(step, iters=iters)
    tps = batch * seq / sec
    peak = measured_matmul_flops()
    emit({"impl": impl, "tokens_per_s": tps, "mfu": tps * forward_flops_per_token(cfg, seq) / peak,
          "peak_rss_mb": peak_rss_mb(), "ceiling_gflops": peak / 1e9})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.batch, a.seq, a.iters)
    rows = [run_worker(__file__, impl, "--batch", str(a.batch), "--seq", str(a.seq), "--iters", str(a.iters))
            for impl in ("jaxadapt", "transformers")]
    print(f"forward, {PRESET} shapes, float32, batch {a.batch} x {a.seq}, {os.cpu_count()} CPU threads; "
          f"matmul ceiling {rows[0]['ceiling_gflops']:.0f} GFLOP/s")
    print_table(rows, [("impl", "impl", "s"), ("tokens_per_s", "tokens/s", ".1f"), ("mfu", "MFU", ".1%"),
                       ("peak_rss_mb", "peak RSS MB", ".0f")])
    print(f"ratio jaxadapt / transformers: {rows[0]['tokens_per_s'] / rows[1]['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
