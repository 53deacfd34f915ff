"""Decode throughput: jaxadapt.generate vs transformers' generate (torch), float32, greedy, KV cache on both sides.

    .venv/bin/python scripts/bench/generate.py [--batches 1,8] [--new-tokens 128] [--prompt-len 32] [--iters 3]
                                               [--bf16-weights] [--rounds 1]

The real SmolLM2-135M-Instruct (jaxadapt.assets.smollm2_dir; transformers with randomly initialised weights ran
~30x slower per step here, so random weights would flatter jaxadapt); EOS is disabled on both sides so every row
generates all new tokens. tokens/s = batch * new tokens / wall time of one whole generate call (prefill
included), median of --iters after a warm-up call that also compiles. Each (implementation, batch) runs in its own
process with the same number of threads.

--bf16-weights rounds every weight to bfloat16 on both sides (both still compute in float32). The hub's SmolLM2
checkpoint is bfloat16, so loaded in float32 it holds such values, while the local copy is dequantised from a Q4_1
GGUF; jaxadapt's decode copy stores exact bfloat16 weights in half the bytes (jaxadapt.generate.decode_copy).

Every decoded token reads all the weights once, so a step can't take less than weight bytes / read bandwidth. A
last worker measures that floor on this machine (the best of several multi-threaded sums over a buffer the size of
the weights) and the script prints the best ratio it allows: transformers' ms per step / floor ms.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_rounds, emit, median_seconds, peak_rss_mb, print_rounds, print_table, run_worker  # noqa: E402


def worker(impl: str, batch: int, new_tokens: int, prompt_len: int, iters: int, bf16_weights: bool) -> None:
    import numpy as np

    from jaxadapt.assets import smollm2_dir

    prompts = np.random.default_rng(0).integers(0, 49152, (batch, prompt_len))
    if impl == "jaxadapt":
        from jaxadapt.generate import generate_ids
        from jaxadapt.io.hf import load_pretrained

        model = load_pretrained(smollm2_dir())
        if bf16_weights:
            import jax.numpy as jnp
            from flax import nnx

            for _, var in nnx.iter_graph(model):
                if isinstance(var, nnx.Param):
                    var[...] = var[...].astype(jnp.bfloat16).astype(jnp.float32)
        ids = prompts.tolist()

        def run():
            out = generate_ids(model, ids, eos_ids=(), max_new_tokens=new_tokens)
            assert all(len(row) == new_tokens for row in out)
    else:
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(os.cpu_count())
        model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), dtype=torch.float32).eval()
        model.generation_config.eos_token_id, model.generation_config.pad_token_id = None, 0
        if bf16_weights:
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).to(torch.float32))
        ids = torch.tensor(prompts)

        def run():
            with torch.no_grad():
                out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                     min_new_tokens=new_tokens, do_sample=False, use_cache=True)
            assert out.shape[1] == prompt_len + new_tokens

    sec = median_seconds(run, warmup=1, iters=iters)
    emit({"impl": impl, "batch": batch, "tokens_per_s": batch * new_tokens / sec, "ms_per_step": 1e3 * sec / new_tokens,
          "peak_rss_mb": peak_rss_mb()})


def floor_worker(iters: int = 10) -> None:
    """The weight bytes of one decode step and the fastest read of that many bytes (torch sum, all threads)."""
    import time

    import torch
    from transformers import AutoModelForCausalLM

    from jaxadapt.assets import smollm2_dir

    torch.set_num_threads(os.cpu_count())
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir()), dtype=torch.float32)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())  # tied embeddings count once
    del model
    buf = torch.ones(nbytes // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(iters):
        t = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - t)
    emit({"weight_mb": nbytes / 1e6, "read_gb_s": nbytes / best / 1e9, "floor_ms": 1e3 * best})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--bf16-weights", action="store_true", help="round the weights to bfloat16 on both sides")
    add_rounds(ap)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker == "floor":
        return floor_worker()
    if a.worker:
        return worker(a.worker, a.batch, a.new_tokens, a.prompt_len, a.iters, a.bf16_weights)
    ratios: dict[str, list[float]] = {}
    for r in range(a.rounds):
        rows = [run_worker(__file__, impl, "--batch", b, "--new-tokens", str(a.new_tokens), "--prompt-len",
                           str(a.prompt_len), "--iters", str(a.iters), *(["--bf16-weights"] if a.bf16_weights else []))
                for b in a.batches.split(",") for impl in ("jaxadapt", "transformers")]
        floor = run_worker(__file__, "floor")
        print(f"{f'round {r + 1}: ' if a.rounds > 1 else ''}greedy decode, SmolLM2-135M-Instruct, float32"
              f"{' (weights rounded to bfloat16)' * a.bf16_weights}, prompt {a.prompt_len} + {a.new_tokens} new "
              f"tokens, {os.cpu_count()} CPU threads")
        print_table(rows, [("impl", "impl", "s"), ("batch", "batch", "d"), ("tokens_per_s", "tokens/s", ".1f"),
                           ("ms_per_step", "ms/step", ".1f"), ("peak_rss_mb", "peak RSS MB", ".0f")])
        print(f"memory floor: {floor['weight_mb']:.0f} MB of float32 weights per step / {floor['read_gb_s']:.1f} "
              f"GB/s read = {floor['floor_ms']:.1f} ms per step"
              + (" (jaxadapt's decode copy holds the bfloat16-exact weights in half the bytes)" * a.bf16_weights))
        for jax_row, torch_row in zip(rows[::2], rows[1::2]):
            ratio = jax_row["tokens_per_s"] / torch_row["tokens_per_s"]
            ratios.setdefault(f"batch {jax_row['batch']}", []).append(ratio)
            print(f"batch {jax_row['batch']}: ratio jaxadapt / transformers: {ratio:.2f}x (the float32 floor allows "
                  f"at most {torch_row['ms_per_step'] / floor['floor_ms']:.2f}x; jaxadapt is at "
                  f"{floor['floor_ms'] / jax_row['ms_per_step']:.0%} of it)")
    print_rounds(ratios)

if __name__ == "__main__":
    main()
