"""Helpers of the training tests: run the real CLI, read what it logged."""

import json
import sys


def train_command(root, name, *extra):
    return [sys.executable, "-m", "jaxadapt.cli", "train", str(root / "run.yaml"), f"name={name}", *extra]


def logged_losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}
