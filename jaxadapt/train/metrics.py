"""Run metrics: metrics.jsonl (one JSON object per logged step), TensorBoard events, optional W&B, and a live
progress line. Only process 0 writes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax


class MetricsLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True, wandb_project: str | None = None,
                 config: dict | None = None, total_steps: int = 0):
        self.active = jax.process_index() == 0
        self.total = total_steps
        self.file = self.tb = self.wandb = None
        if not self.active:
            return
        self.file = open(Path(run_dir) / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if wandb_project:
            import wandb

            self.wandb = wandb.init(project=wandb_project, name=Path(run_dir).name, config=config, resume="allow")

    def log(self, step: int, metrics: dict) -> None:
        if not self.active:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(row, step=step)
        if "loss" in row:
            sys.stderr.write(
                f"\rstep {step}/{self.total}  loss {row['loss']:.4f}  lr {row.get('lr', 0):.2e}  "
                f"{row.get('tokens_per_sec', 0):,.0f} tok/s  mfu {row.get('mfu', 0):.1%}   ")
            sys.stderr.flush()

    def close(self) -> None:
        if not self.active:
            return
        sys.stderr.write("\n")
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return float(v) if isinstance(v, float) else v
