"""Two processes on localhost (jax.distributed, 4 CPU devices each) train exactly like one process with 8, run
a recipe's other stages once, and save the same step when only one of them gets SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import yaml
from trainhelpers import logged_losses, train_command

from jaxadapt.errors import PREEMPTED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_reproduce_the_single_process_losses(setup):
    root = setup
    common = ("train.steps=4", "checkpoint.every=2", "data.host_sharding=rows", "data.validation_fraction=0")
    single = subprocess.run(train_command(root, "one_process", *common), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]

    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                   JAXADAPT_COORDINATOR=f"127.0.0.1:{port}", JAXADAPT_NUM_PROCESSES="2", JAXADAPT_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(train_command(root, "two_processes", *common), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]

    want = logged_losses(root / "runs" / "one_process")
    got = logged_losses(root / "runs" / "two_processes")
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    np.testing.assert_allclose([got[s] for s in range(1, 5)], [want[s] for s in range(1, 5)], atol=1e-5, rtol=0)
    # Both processes took part in the (collective) checkpoint; only process 0 wrote metrics.
    assert sorted(p.name for p in (root / "runs" / "two_processes" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["2", "4"]


def test_a_recipe_on_two_processes_runs_its_other_stages_once(setup, tmp_path):
    """`jaxadapt run` on both processes: the tokenizer and vocab stages and the export run on process 0 only, the
    other waits; the train stage runs on both (one JAX process each) and trains like the single-process run."""
    root = setup
    new_words = ["zonnebloemveld", "windmolenpark", "fietsenstalling", "kaasboerderij", "grachtengordel"]
    (tmp_path / "new.txt").write_text("\n".join(" ".join(new_words[(i + j) % 5] for j in range(8)) for i in range(60)))
    recipe = {
        "name": "two", "runs_root": str(tmp_path / "runs"),
        "stages": [
            {"name": "tok", "kind": "tokenizer_extend",
             "config": {"base": str(root / "model"), "corpus": [str(tmp_path / "new.txt")], "add": 8}},
            {"name": "adapt", "kind": "vocab_adapt",
             "config": {"model": str(root / "model"), "tokenizer": "${stages.tok.out}"}},
            {"name": "train", "kind": "train", "config": {
                "model": {"path": "${stages.adapt.out}"},
                "train": {"trainable": "embeddings", "steps": 2, "batch_size": 8, "seq_len": 32, "log_every": 1},
                "checkpoint": {"every": 2}, "logging": {"cpu_peak_flops": 1e11},
                "data": {"sources": [{"name": "nl", "paths": [str(root / "corpus.jsonl")]}],
                         "validation_fraction": 0, "host_sharding": "rows", "prefetch": 0}}},
            {"name": "hf", "kind": "export", "config": {"run_dir": "${stages.train.out}"}},
        ]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "jaxadapt.cli", "run", str(path)], env=dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAXADAPT_COORDINATOR=f"127.0.0.1:{port}",
        JAXADAPT_NUM_PROCESSES="2", JAXADAPT_PROCESS_ID=str(i)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    for stage in ("tok", "adapt", "hf"):
        assert f"[{stage}] running" in outs[0] and f"[{stage}] process 1: waiting for process 0 to run it" in outs[1]
        assert f"[{stage}] running" not in outs[1]
    assert "[train] running" in outs[0] and "[train] process 1: running" in outs[1]
    stages = tmp_path / "runs" / "two" / "stages"
    assert (stages / "train" / "log.process-1.txt").exists()
    assert sorted(p.name for p in (stages / "train" / "out" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    assert (stages / "hf" / "out" / "config.json").exists()
    records = {s: json.loads((stages / s / "stage.json").read_text()) for s in ("tok", "adapt", "train", "hf")}
    assert all(r["status"] == "complete" for r in records.values())
    assert records["hf"]["upstream"] == records["train"]["run_id"]


def test_sigterm_to_one_process_stops_both_after_the_same_step(setup):
    """A pod's preemption notice may reach one host: JAX's preemption sync point makes every process save the same
    step (one complete checkpoint) and exit 75. (A rerun resuming is test_run's single-process test.)"""
    root = setup
    run = root / "runs" / "two_preempted"
    common = ("train.steps=400", "checkpoint.every=100", "data.host_sharding=rows", "data.validation_fraction=0")
    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                   JAXADAPT_COORDINATOR=f"127.0.0.1:{port}", JAXADAPT_NUM_PROCESSES="2", JAXADAPT_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(train_command(root, run.name, *common), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_text().splitlines()) < 2:
        for p in procs:
            assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # process 1 only
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [PREEMPTED] * 2, errs[0][-3000:] + errs[1][-3000:]
    saved = [int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 2 <= saved[0] < 400, saved
    assert f"preemption notice (SIGTERM on a host; all 2 processes stop here): saved step {saved[0]}" in errs[0]
    assert not [p.name for p in (run / "checkpoints").iterdir() if "tmp" in p.name]
