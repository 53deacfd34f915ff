"""`jaxadapt train` end to end: run dir layout, exact resume after kill -9, SIGTERM saves and exits 0,
export of the result. Runs the real CLI in subprocesses on 8 simulated CPU devices."""

import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

WORDS = ("de het een van en in is dat op te zijn met voor niet aan er maar om ook als dan bij nog uit wordt "
         "kaas fiets gracht molen sneeuw zeeën naïef café").split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_hf_model_module):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("run")
    rng = random.Random(0)
    docs = [f"{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) for i in range(400)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(docs, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    tok.save(str(root / "tokenizer.json"))
    model_dir = root / "model"
    make_hf_model_module("llama", num_key_value_heads=2, vocab_size=512, std=0.05).save_pretrained(model_dir)
    PreTrainedTokenizerFast(tokenizer_file=str(root / "tokenizer.json"), eos_token="<|endoftext|>",
                            bos_token="<|endoftext|>").save_pretrained(model_dir)
    cfg = {
        "runs_root": str(root / "runs"),
        "model": {"path": str(model_dir)},
        "train": {"trainable": "lora+embeddings", "steps": 12, "batch_size": 8, "seq_len": 32, "log_every": 1},
        "optim": {"learning_rate": 0.01, "warmup_steps": 2},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.1},
        "checkpoint": {"every": 3, "keep": 2},
        "logging": {"tensorboard": True, "cpu_peak_flops": 1e11},
        "data": {"sources": [{"name": "nl", "paths": [str(root / "corpus.jsonl")]}], "validation_fraction": 0.05,
                 "prefetch": 0},
    }
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _cmd(root, name, *extra):
    return [sys.executable, "-m", "jaxadapt.cli", "train", str(root / "run.yaml"), f"name={name}", *extra]


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _wait_for_checkpoint(run, step, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "checkpoints" / str(step)).is_dir():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint {step} after {timeout}s")


def test_kill_9_then_resume_reproduces_the_uninterrupted_losses(setup):
    root = setup
    done = subprocess.run(_cmd(root, "straight"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    straight = root / "runs" / "straight"
    assert {p.name for p in straight.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "tensorboard"}
    reference = _losses(straight)
    assert sorted(reference) == list(range(1, 13))
    row = json.loads((straight / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "loss", "grad_norm", "lr", "tokens_seen", "tokens_per_sec", "mfu", "step_time_s"} <= set(row)
    assert any("eval/nl/bpb" in json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines())
    assert sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit()) == [9, 12]

    run = root / "runs" / "killed"
    proc = subprocess.Popen(_cmd(root, "killed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(run, 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run(_cmd(root, "killed"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stderr
    resumed = _losses(run)
    assert sorted(resumed) == list(range(1, 13))
    for step in range(1, 13):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


def test_sigterm_saves_and_exits_0_then_export_loads_in_transformers(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    root = setup
    run = root / "runs" / "preempted"
    proc = subprocess.Popen(_cmd(root, "preempted", "checkpoint.every=100", "train.steps=400"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_text().splitlines()) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: saved step" in err
    saved = [int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 2 <= saved[0] < 400

    from jaxadapt.cli import main

    assert main(["export", str(run), str(tmp_path / "hf"), "--merge-lora"]) == 0
    assert main(["export", str(run), str(tmp_path / "adapter"), "--peft-adapter"]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = torch.tensor([[5, 6, 7, 8]])
    from peft import PeftModel

    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "model"), tmp_path / "adapter")
    with torch.no_grad():
        assert np.abs(hf(ids).logits.numpy() - peft.eval()(ids).logits.numpy()).max() < 1e-4
