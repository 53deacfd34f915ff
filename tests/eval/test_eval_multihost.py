"""`jaxadapt eval` in two processes on localhost (jax.distributed, 4 CPU devices each) scores exactly what one
process with 8 devices scores: bits per byte and multiple choice, written once by process 0."""

import json
import os
import socket
import subprocess
import sys

import pytest
from tinymodels import build_tiny_lm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_score_like_one(tmp_path):
    model = build_tiny_lm(tmp_path, docs_per_lang=30)
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"context": f"de kat {i}", "choices": [" zit", " fiets", " het"],
                                        "label": i % 3}) + "\n" for i in range(11)))

    def command(out):
        return [sys.executable, "-m", "jaxadapt.cli", "eval", str(model), "--bpb", f"nl={tmp_path / 'nl.jsonl'}",
                "--bpb", f"ru={tmp_path / 'ru.jsonl'}", "--mc", str(task), "--seq-len", "64", "--batch-size", "8",
                "--json", str(out)]

    single = subprocess.run(command(tmp_path / "one.json"), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    port = _free_port()
    procs = [subprocess.Popen(command(tmp_path / "two.json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                                                  JAXADAPT_COORDINATOR=f"127.0.0.1:{port}",
                                                  JAXADAPT_NUM_PROCESSES="2", JAXADAPT_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    want, got = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    for name in ("nl", "ru"):
        assert got["bpb"][name]["tokens"] == want["bpb"][name]["tokens"]
        assert got["bpb"][name]["bpb"] == pytest.approx(want["bpb"][name]["bpb"], rel=1e-6)
    assert got["mc"] == want["mc"] and got["mc"]["task"]["items"] == 11
    # They really ran as one job (jax.distributed's CPU collectives log each rank joining), and each printed the
    # single process's table. Gloo's log lines come from several C++ threads in fragments that can land in front of
    # any line, so look for every table row as a substring.
    rows = single.stdout.strip().splitlines()
    assert len(rows) == 5 and rows[0].startswith("corpus") and "[Gloo]" not in single.stdout
    for out, _ in outs:
        assert "[Gloo] Rank" in out
        assert all(row in out for row in rows), (rows, out)
