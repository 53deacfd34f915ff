"""The TPU and SLURM launch scripts: syntax, shellcheck, --help, and the commands --dry-run prints."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*REPO.glob("scripts/*.sh"), *REPO.glob("scripts/tpu/*.sh"), *REPO.glob("scripts/gpu/*.sh"),
                  *REPO.glob("scripts/gpu/*.sbatch")])
TPU = ("create", "setup", "launch", "logs", "delete")


def sh(*args: str) -> str:
    done = subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_script_parses():
    assert len(SCRIPTS) >= 9
    for script in SCRIPTS:
        sh("-n", str(script))


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="no shellcheck (scripts/setup.sh --test installs it as root)")
def test_shellcheck():
    done = subprocess.run(["shellcheck", "-x", *(str(s.relative_to(REPO)) for s in SCRIPTS)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_help():
    for name in TPU:
        assert "--dry-run" in sh(f"scripts/tpu/{name}.sh", "--help")
    assert "--gpus-per-node" in sh("scripts/gpu/submit.sh", "--help")
    assert "Usage" in sh("scripts/gpu/job.sbatch", "--help")


def test_tpu_dry_run_commands():
    at = ["--name", "v5", "--zone", "us-west4-a", "--dry-run"]
    assert sh("scripts/tpu/create.sh", *at, "--type", "v5litepod-16", "--spot").strip() == (
        "gcloud compute tpus tpu-vm create v5 --zone=us-west4-a --accelerator-type=v5litepod-16 "
        "--version=v2-alpha-tpuv5-lite --spot")
    assert sh("scripts/tpu/create.sh", *at, "--queued").startswith(
        "gcloud compute tpus queued-resources create v5 --node-id=v5 --zone=us-west4-a")
    setup = sh("scripts/tpu/setup.sh", *at, "--repo", "https://example.org/jaxadapt.git", "--ref", "v1")
    assert "--worker=all" in setup and "git clone https://example.org/jaxadapt.git" in setup
    assert "bash scripts/setup.sh" in setup and "checkout -q v1" in setup
    copy = sh("scripts/tpu/setup.sh", *at).splitlines()
    assert copy[1].startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in copy[1]
    assert sh("scripts/tpu/delete.sh", *at, "--queued").strip() == (
        "gcloud compute tpus queued-resources delete v5 --zone=us-west4-a --force --quiet")
    assert "--worker=3" in sh("scripts/tpu/logs.sh", *at, "--worker", "3")


def test_tpu_launch_runs_each_command_on_every_worker(tmp_path):
    """The printed command, replayed with fake gcloud and jaxadapt, runs exactly the intended argv."""
    (tmp_path / "launch.txt").write_text("jaxadapt train a.yaml lora.rank=8\n\njaxadapt run 'b c.yaml'\n")
    printed = sh("scripts/tpu/launch.sh", "--name", "v5", "--zone", "z", "--runs-root", "/mnt/my runs",
                 "--file", str(tmp_path / "launch.txt"), "--dry-run").strip()
    argv = shlex.split(printed)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v5"] and "--worker=all" in argv
    remote = next(a for a in argv if a.startswith("--command=")).removeprefix("--command=")
    home = tmp_path / "home"
    (home / "jaxadapt/.venv/bin").mkdir(parents=True)
    (home / "jaxadapt/.venv/bin/activate").write_text(
        'jaxadapt() { printf "%s|" "$TPU_WORKER_ID" "$TPU_WORKER_HOSTNAMES" "$@" >> ~/argv; echo >> ~/argv; }\n')
    (home / "bin").mkdir()
    (home / "bin/curl").write_text(  # the TPU VM's metadata server, as worker 1 of two
        '#!/bin/bash\ncase "$*" in *agent-worker-number) echo -n 1;;\n'
        '*worker-network-endpoints) echo -n unknown:unknown:10.0.0.1,unknown:unknown:10.0.0.2;; esac\n')
    (home / "bin/curl").chmod(0o755)
    subprocess.run(["bash", "-c", remote.removesuffix(" &")],
                   env={"HOME": str(home), "PATH": f"{home}/bin:/usr/bin:/bin"}, check=True)
    assert (home / "argv").read_text().splitlines() == [
        "1|10.0.0.1,10.0.0.2|train|a.yaml|lora.rank=8|runs_root=/mnt/my runs|",
        "1|10.0.0.1,10.0.0.2|run|b c.yaml|runs_root=/mnt/my runs|"]


def test_slurm_dry_run():
    out = sh("scripts/gpu/submit.sh", "--nodes", "4", "--gpus-per-node", "8", "--dry-run", "--",
             "jaxadapt", "train", "configs/x.yaml", "lora.rank=8")
    assert out.strip() == ("sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --job-name=jaxadapt "
                           "--output=logs/%x-%j.out scripts/gpu/job.sbatch train configs/x.yaml lora.rank=8")
    assert sh("scripts/gpu/job.sbatch", "--dry-run", "train", "x.yaml").strip() == (
        "srun --kill-on-bad-exit=1 --cpu-bind=none .venv/bin/python -m jaxadapt.cli train x.yaml")
