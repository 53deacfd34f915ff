"""Data pipeline throughput: read -> tokenize -> pack -> batch over the real Dutch corpus, vs what training eats.

    .venv/bin/python scripts/bench/data.py [--seq 1024] [--batch 8] [--tokens 1500000] [--workers 0 2]

The corpus is libreoffice-help-nl from Debian (`jaxadapt.data.debian.corpus("nl")`, ~5 MB, ~2M SmolLM2 tokens),
the tokenizer SmolLM2's. Each worker setting runs in its own process; tokens/s counts non-padding tokens after
the first batch (whose latency, shuffle-window fill and worker start-up included, is reported apart). The ratio
is against what training consumes: HF full fine-tuning of SmolLM2-135M on this CPU, ~140 tokens/s
(shared/REFERENCE.md) unless --train-tps gives a measured number. The goal is >= 20x.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, peak_rss_mb, print_table, run_worker

REFERENCE_TRAIN_TPS = 140.0  # HF transformers full fine-tuning, SmolLM2-135M, batch 4 x 256, fp32, 2 threads


def worker(workers: int, seq: int, batch: int, tokens: int) -> None:
    from transformers import AutoTokenizer

    from jaxadapt.assets import smollm2_dir
    from jaxadapt.data import DataConfig, SourceConfig, build_train_iterator
    from jaxadapt.data.debian import corpus

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    cfg = DataConfig(sources=(SourceConfig("nl", (str(corpus("nl")),)),), seq_len=seq, batch_size=batch,
                     num_workers=workers, eos="always")
    start = time.perf_counter()
    it = build_train_iterator(cfg, tok)
    next(it)
    first = time.perf_counter() - start
    seen, start = 0, time.perf_counter()
    while seen < tokens:
        seen += int((next(it)["segment_ids"] > 0).sum())
    tps = seen / (time.perf_counter() - start)
    it.close()
    emit({"workers": workers, "tokens_per_s": tps, "first_batch_s": first, "peak_rss_mb": peak_rss_mb()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=1_500_000, help="tokens to time after the first batch")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="grain worker process counts to try")
    ap.add_argument("--train-tps", type=float, default=REFERENCE_TRAIN_TPS,
                    help="training consumption in tokens/s to compare with (default: HF full FT reference)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker is not None:
        return worker(int(a.worker), a.seq, a.batch, a.tokens)
    rows = [run_worker(__file__, str(w), "--seq", str(a.seq), "--batch", str(a.batch), "--tokens", str(a.tokens))
            for w in a.workers]
    for r in rows:
        r["ratio"] = r["tokens_per_s"] / a.train_tps
    print(f"data pipeline, Dutch Debian corpus, SmolLM2 tokenizer, batch {a.batch} x {a.seq}, "
          f"{os.cpu_count()} CPU cores; training consumes {a.train_tps:.0f} tokens/s"
          + (" (HF full fine-tuning reference, REFERENCE.md)" if a.train_tps == REFERENCE_TRAIN_TPS else ""))
    print_table(rows, [("workers", "workers", "d"), ("tokens_per_s", "tokens/s", ",.0f"),
                       ("ratio", "x training", ".0f"), ("first_batch_s", "1st batch s", ".2f"),
                       ("peak_rss_mb", "peak RSS MB", ".0f")])
    best = max(rows, key=lambda r: r["tokens_per_s"])
    print(f"best: {best['tokens_per_s']:,.0f} tokens/s = {best['ratio']:.0f}x what training consumes "
          f"(goal >= 20x: {'met' if best['ratio'] >= 20 else 'NOT met'})")


if __name__ == "__main__":
    main()
