"""A run dir evaluates with its LoRA applied: the same bpb as its merged export."""

from __future__ import annotations

import json

import pytest
import yaml
from evalhelpers import TEXTS

from jaxadapt.cli import main


@pytest.mark.slow  # a real (2-step) training run: ~40 s on 2 CPU cores
def test_run_dir_equals_export(tiny_dir, tmp_path):

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"{i} {t}"}, ensure_ascii=False) + "\n"
                                for i, t in enumerate(TEXTS * 20)))
    cfg = {"runs_root": str(tmp_path / "runs"), "model": {"path": str(tiny_dir[0])},
           "train": {"trainable": "lora", "steps": 2, "batch_size": 8, "seq_len": 32, "log_every": 1},
           "optim": {"learning_rate": 0.05, "warmup_steps": 0}, "lora": {"rank": 4, "alpha": 8},
           "checkpoint": {"every": 2}, "data": {"sources": [{"name": "c", "paths": [str(corpus)]}], "prefetch": 0,
                    "validation_fraction": 0.2}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "run.yaml"), "name=lora"]) == 0
    run = tmp_path / "runs" / "lora"
    assert main(["export", str(run), str(tmp_path / "merged"), "--merge-lora"]) == 0

    def bpb(model, name):
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(model), "--bpb", f"c={corpus}", "--max-docs", "5", "--seq-len", "32",
                     "--json", str(out)]) == 0
        return json.loads(out.read_text())["bpb"]["c"]["bpb"]

    trained = bpb(run / "checkpoints" / "2", "ckpt")
    assert abs(trained / bpb(tmp_path / "merged", "merged") - 1) < 1e-5
    assert abs(trained / bpb(tiny_dir[0], "base") - 1) > 1e-3  # the LoRA did change the model
