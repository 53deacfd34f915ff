"""Shared benchmark plumbing: each implementation runs in its own subprocess (so peak memory is its own),
prints one JSON line, and the parent prints them side by side with ratios."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time


def median_seconds(fn, warmup: int = 2, iters: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(script: str, *args: str) -> dict:
    """Run `script --worker ARGS` in a fresh interpreter and return its RESULT dict."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, script, "--worker", *args], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker {args} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format)."""
    print("  ".join(f"{h:>14}" for _, h, _ in columns))
    for r in rows:
        print("  ".join(f"{format(r[k], f) if k in r else '-':>14}" for k, _, f in columns))


def add_rounds(ap) -> None:
    """The --rounds option of scripts whose ratios print_rounds summarises."""
    ap.add_argument("--rounds", type=int, default=1, help="run every worker this many times, alternating, and "
                                                         "print each ratio's median")


def print_rounds(ratios: dict[str, list[float]]) -> None:
    """With --rounds N > 1: each ratio's median over the rounds. The implementations alternate within a round, so a
    slow spell of the (shared, noisy) machine lands on both sides of some ratios instead of one side of all."""
    for name, values in ratios.items():
        if len(values) > 1:
            print(f"{name}: median {statistics.median(values):.2f}x over {len(values)} rounds "
                  f"({' / '.join(f'{v:.2f}x' for v in values)})")
