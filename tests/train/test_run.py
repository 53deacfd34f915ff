"""`jaxadapt train` end to end: run dir layout, exact resume after kill -9, SIGTERM saves and exits 75 (resumed by
a rerun), two processes agree on the step a SIGTERM to one of them saves, SLURM variables without srun,
export of the result. Runs the real CLI in subprocesses on 8 simulated CPU devices."""

import json
import random
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from trainhelpers import logged_losses, train_command

from jaxadapt.errors import PREEMPTED


def _wait_for_checkpoint(run, step, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (run / "checkpoints" / str(step)).is_dir():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint {step} after {timeout}s")


@pytest.fixture(scope="module")
def reference(setup):
    """An uninterrupted 12-step run (checkpoints every 3 steps, keep 2): the losses every resumed run must repeat."""
    done = subprocess.run(train_command(setup, "straight"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return setup / "runs" / "straight"


def _resume_matches(root, run, reference):
    again = subprocess.run(train_command(root, run.name), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13)), "no row of a repeated step twice"
    resumed, straight = logged_losses(run), logged_losses(reference)
    for step in range(1, 13):
        assert resumed[step] == straight[step], (step, resumed[step], straight[step])


def test_kill_9_then_resume_reproduces_the_uninterrupted_losses(setup, reference):
    root = setup
    assert {p.name for p in reference.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "tensorboard"}
    assert sorted(logged_losses(reference)) == list(range(1, 13))
    row = json.loads((reference / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "loss", "grad_norm", "lr", "tokens_seen", "tokens_per_sec", "mfu", "step_time_s"} <= set(row)
    assert any("eval/nl/bpb" in json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines())
    assert sorted(int(p.name) for p in (reference / "checkpoints").iterdir() if p.name.isdigit()) == [9, 12]

    run = root / "runs" / "killed"
    proc = subprocess.Popen(train_command(root, "killed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(run, 6, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _resume_matches(root, run, reference)


def test_kill_9_while_checkpoints_are_written(setup, reference):
    """SIGKILL as soon as orbax's temporary dir of a step appears (after a random 0-30 ms): first while the first
    checkpoint is written (so the next start has nothing to resume), then at step 6 or 9 of the restarted run. The
    half-written step is never restored, and the losses and metrics rows are the uninterrupted run's."""
    root, run = setup, setup / "runs" / "killed-writing"
    seed = int(time.time())
    rng = random.Random(seed)  # the seed is in the failure messages: a failing run can be repeated
    mid_write = 0
    for step in (3, rng.choice([6, 9])):
        proc = subprocess.Popen(train_command(root, run.name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        ckpts, deadline = run / "checkpoints", time.time() + 240
        while not (ckpts.is_dir() and any(p.name.startswith(f"{step}.") and "tmp" in p.name
                                          for p in ckpts.iterdir())):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mid_write += not (ckpts / str(step)).is_dir()
    assert mid_write, f"at least one kill landed before a step was complete (seed {seed})"
    _resume_matches(root, run, reference)


def _wait_for_rows(run, rows, procs, timeout=240):
    deadline = time.time() + timeout
    while not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_text().splitlines()) < rows:
        for proc in procs:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)


def test_sigterm_saves_and_exits_75_then_resumes_and_export_loads_in_transformers(setup, tmp_path):
    from transformers import AutoModelForCausalLM

    root = setup
    run = root / "runs" / "preempted"
    proc = subprocess.Popen(train_command(root, "preempted", "checkpoint.every=100", "train.steps=400"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run, 2, [proc])
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == PREEMPTED == 75, err[-3000:]  # not 0: a watcher must not take it for finished
    assert "SIGTERM: saved step" in err and "(exit 75)" in err and "run dir:" not in out
    saved = [int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 2 <= saved[0] < 400
    # The same command resumes (two more steps here, so that it ends soon) and exits 0 when the run is finished.
    again = subprocess.run(train_command(root, "preempted", "checkpoint.every=100", f"train.steps={saved[0] + 2}")
                           + ["--allow-config-change"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed {run} from step {saved[0]}" in again.stderr
    assert max(logged_losses(run)) == saved[0] + 2

    from jaxadapt.cli import main

    assert main(["export", str(run), str(tmp_path / "hf"), "--merge-lora"]) == 0
    assert main(["export", str(run), str(tmp_path / "adapter"), "--peft-adapter"]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    ids = torch.tensor([[5, 6, 7, 8]])
    from peft import PeftModel

    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "model"), tmp_path / "adapter")
    with torch.no_grad():
        assert np.abs(hf(ids).logits.numpy() - peft.eval()(ids).logits.numpy()).max() < 1e-4
