"""A run dir evaluates with its LoRA applied: the same bpb as its merged export, on any mesh and in bfloat16;
generate shards the same way and export writes the dtype asked for."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from evalhelpers import TEXTS

from jaxadapt.cli import main


@pytest.mark.slow  # a real (2-step) training run: ~40 s on 2 CPU cores
def test_run_dir_equals_export(tiny_dir, tmp_path, capsys):

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

    def bpb(model, name, *options):
        out = tmp_path / f"{name}.json"
        assert main(["eval", str(model), "--bpb", f"c={corpus}", "--max-docs", "5", "--seq-len", "32",
                     "--json", str(out), *options]) == 0
        return json.loads(out.read_text())["bpb"]["c"]["bpb"]

    trained = bpb(run / "checkpoints" / "2", "ckpt")
    assert abs(trained / bpb(tmp_path / "merged", "merged") - 1) < 1e-5
    assert abs(trained / bpb(tiny_dir[0], "base") - 1) > 1e-3  # the LoRA did change the model
    # the mesh says where the parameters live, not what they are; bfloat16 is close, not equal
    assert abs(trained / bpb(run, "tensor", "--mesh", "data=2,fsdp=2,tensor=2") - 1) < 1e-5
    assert abs(trained / bpb(tmp_path / "merged", "merged-fsdp", "--mesh", "fsdp=8") - 1) < 1e-5
    half = bpb(run, "bf16", "--mesh", "fsdp=8", "--dtype", "bfloat16")
    assert half != trained and abs(half / trained - 1) < 2e-2

    def generated(*options):
        capsys.readouterr()
        assert main(["generate", str(run), "--prompt", TEXTS[0][:20], "--max-new-tokens", "8", *options]) == 0
        return capsys.readouterr().out

    assert generated() == generated("--mesh", "fsdp=2,tensor=4")

    assert main(["export", str(run), str(tmp_path / "merged-bf16"), "--dtype", "bfloat16"]) == 0
    f32, bf16 = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("merged", "merged-bf16"))
    assert all(bf16[k].dtype == torch.bfloat16 and torch.equal(f32[k].to(torch.bfloat16), bf16[k]) for k in f32)
    assert json.loads((tmp_path / "merged-bf16" / "config.json").read_text())["dtype"] == "bfloat16"

    for bad, words in ((["--mesh", "fsdp=3"], ["--mesh fsdp=3", "there are 8"]), (["--dtype", "int8"], ["int8", "bfloat16"]),
                       (["--mesh", "pipe=2"], ["pipe=2", "data, fsdp"])):
        capsys.readouterr()
        assert main(["eval", str(run), "--bpb", f"c={corpus}", *bad]) == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words), err
