"""`jaxadapt train` end to end: run dir layout, exact resume after kill -9, SIGTERM saves and exits 0,
export of the result. Runs the real CLI in subprocesses on 8 simulated CPU devices."""

import json
import signal
import subprocess
import time

import numpy as np
import torch
from trainhelpers import logged_losses, train_command


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
    done = subprocess.run(train_command(root, "straight"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    straight = root / "runs" / "straight"
    assert {p.name for p in straight.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "tensorboard"}
    reference = logged_losses(straight)
    assert sorted(reference) == list(range(1, 13))
    row = json.loads((straight / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "loss", "grad_norm", "lr", "tokens_seen", "tokens_per_sec", "mfu", "step_time_s"} <= set(row)
    assert any("eval/nl/bpb" in json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines())
    assert sorted(int(p.name) for p in (straight / "checkpoints").iterdir() if p.name.isdigit()) == [9, 12]

    run = root / "runs" / "killed"
    proc = subprocess.Popen(train_command(root, "killed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(run, 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run(train_command(root, "killed"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stderr
    resumed = logged_losses(run)
    assert sorted(resumed) == list(range(1, 13))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13)), "no row of a repeated step twice"
    for step in range(1, 13):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


def test_sigterm_saves_and_exits_0_then_export_loads_in_transformers(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    root = setup
    run = root / "runs" / "preempted"
    proc = subprocess.Popen(train_command(root, "preempted", "checkpoint.every=100", "train.steps=400"),
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
