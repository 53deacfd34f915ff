"""Run metrics: metrics.jsonl (one JSON object per logged step), TensorBoard events, optional W&B, and a live
progress line. Only process 0 writes."""

from __future__ import annotations

import json
import math
import sys
import time

import jax

from jaxadapt import fs


class MetricsLogger:
    def __init__(self, run_dir, tensorboard: bool = True, wandb_project: str | None = None,
                 config: dict | None = None, total_steps: int = 0):
        self.active = jax.process_index() == 0
        self.total = total_steps
        self.file = self.tb = self.wandb = None
        if not self.active:
            return
        run_dir = fs.path(run_dir)
        url = fs.is_url(str(run_dir))
        self.file = _ObjectLog(run_dir / "metrics.jsonl") if url else open(run_dir / "metrics.jsonl", "a", buffering=1)
        if tensorboard and url and not str(run_dir).startswith(("gs://", "s3://")):
            print(f"warning: no TensorBoard events in {run_dir} (tensorboardX writes local, gs:// and s3:// dirs)",
                  file=sys.stderr)
        elif tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if wandb_project:
            import wandb

            self.wandb = wandb.init(project=wandb_project, name=run_dir.name, config=config, resume="allow")

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

    def flush(self) -> None:
        """Everything logged so far is in the run dir (called before a checkpoint, whose step a resume trusts)."""
        if self.active:
            self.file.flush()
            if self.tb is not None:
                self.tb.flush()

    def close(self) -> None:
        if not self.active:
            return
        sys.stderr.write("\n")
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class _ObjectLog:
    """metrics.jsonl on an object store, which cannot append: the object is rewritten whole, at most every `every`
    seconds, at each checkpoint and at the end (a log is a few MB at most)."""

    def __init__(self, path, every: float = 30.0):
        self.path, self.every = path, every
        self.text = path.read_text() if path.exists() else ""
        self.last, self.dirty = time.monotonic(), False

    def write(self, text: str) -> None:
        self.text += text
        self.dirty = True
        if time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.dirty:
            fs.write_text(self.path, self.text)
            self.last, self.dirty = time.monotonic(), False

    def close(self) -> None:
        self.flush()


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return float(v) if isinstance(v, float) else v
