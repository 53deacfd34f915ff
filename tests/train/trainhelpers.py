"""Helpers of the training tests: a tiny model, its run config and batch; run the real CLI, read what it logged."""

import json
import sys

import numpy as np

from jaxadapt.config import ModelConfig
from jaxadapt.train.config import LoraConfig, ModelSection, OptimConfig, RunConfig, TrainConfig



def train_command(root, name, *extra):
    return [sys.executable, "-m", "jaxadapt.cli", "train", str(root / "run.yaml"), f"name={name}", *extra]


def logged_losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


CFG = ModelConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8)


def run_cfg(trainable="full", batch=16, accum=1, steps=5, **lora):
    return RunConfig(model=ModelSection(path="unused"),
                     train=TrainConfig(trainable=trainable, steps=steps, batch_size=batch, grad_accum=accum),
                     optim=OptimConfig(learning_rate=1e-2, warmup_steps=2, weight_decay=0.1),
                     lora=LoraConfig(rank=4, alpha=8, **lora))


def batch(b=16, t=24, seed=0, vocab=128):
    r = np.random.default_rng(seed)
    ids = r.integers(0, vocab, (b, t + 1))
    segs = np.ones((b, t), np.int32)
    segs[:, t // 2:] = 2  # two packed documents per row
    pos = np.concatenate([np.arange(t // 2), np.arange(t - t // 2)])
    mask = np.ones((b, t), np.float32)
    mask[:, t // 2 - 1] = 0  # no target across the document boundary
    return {"input_ids": ids[:, :-1].astype(np.int32), "targets": ids[:, 1:].astype(np.int32), "loss_mask": mask,
            "segment_ids": segs, "positions": np.broadcast_to(pos, (b, t)).astype(np.int32)}
