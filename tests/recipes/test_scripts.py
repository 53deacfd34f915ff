"""The TPU and SLURM scripts without a cloud: syntax, shellcheck, --help, the commands --dry-run prints, and the exact
command sequences they run against recording stand-ins of gcloud, srun, scontrol and uv on PATH (create → wait →
setup → launch; a lost TPU → delete → create → setup → launch; stop; requeue after a preempted SLURM job). The remote
commands of launch, stop, logs and setup are replayed on this machine in a fake home."""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*REPO.glob("scripts/*.sh"), *REPO.glob("scripts/tpu/*.sh"), *REPO.glob("scripts/gpu/*.sh"),
                  *REPO.glob("scripts/gpu/*.sbatch")])
TPU = ("create", "setup", "launch", "logs", "delete", "stop", "babysit")
JAX = importlib.metadata.version("jax")

# A recording stand-in for a command: appends its argv (tab-separated) to $STUB_LOG and answers from
# $STUB_DIR/NAME.KEY, one "RC|TEXT" line per call (the last line repeats); TEXT goes to stdout (RC 0) or stderr.
STUB = r"""#!/usr/bin/env bash
name=${0##*/}
{ printf '%s' "$name"; printf '\t%s' "$@"; printf '\n'; } >> "$STUB_LOG"
key=default
case "$name:$*" in
  gcloud:*"queued-resources describe"*"value(state.state)"*) key=qr-state ;;
  gcloud:*"tpu-vm describe"*networkEndpoints*) key=endpoints ;;
  gcloud:*"tpu-vm describe"*"value(state)"*) key=node-state ;;
  gcloud:*jaxadapt-job:*) key=probe ;;
  uv:venv*) mkdir -p .venv/bin && printf '#!/bin/sh\nexit 0\n' > .venv/bin/python && chmod +x .venv/bin/python ;;
esac
f="$STUB_DIR/$name.$key"
[ -f "$f" ] || exit 0
line=$(head -n 1 "$f")
if [ "$(wc -l < "$f")" -gt 1 ]; then sed -i 1d "$f"; fi
rc=${line%%|*} text=${line#*|}
if [ -f "$STUB_DIR/$name.sleep" ]; then trap 'exit 75' TERM; sleep 30 & wait; fi
if [ "$rc" = 0 ]; then [ -z "$text" ] || printf '%b\n' "$text"; else printf '%b\n' "$text" >&2; fi
exit "$rc"
"""


def sh(*args: str) -> str:
    done = subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Stubs:
    """gcloud, srun, sbatch, scontrol and uv on PATH, recording every call; `answer(name, key, *lines)` scripts
    their replies."""

    def __init__(self, tmp: Path):
        self.dir, self.log = tmp / "stubs", tmp / "stub.log"
        self.dir.mkdir()
        for name in ("gcloud", "srun", "sbatch", "scontrol", "uv"):
            (self.dir / name).write_text(STUB)
            (self.dir / name).chmod(0o755)
        self.env = {**os.environ, "PATH": f"{self.dir}:{os.environ['PATH']}", "STUB_DIR": str(self.dir),
                    "STUB_LOG": str(self.log)}

    def answer(self, name: str, key: str, *lines: str):
        (self.dir / f"{name}.{key}").write_text("".join(line + "\n" for line in lines))

    def calls(self) -> list[list[str]]:
        return [line.split("\t") for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def steps(self) -> list[str]:
        """Each gcloud call as what it does: 'qr describe', 'qr create', 'vm ssh:launch', ...; others by name."""
        out = []
        for argv in self.calls():
            if argv[0] != "gcloud":
                out.append(" ".join(argv[:2]))
                continue
            words = [a for a in argv[3:] if not a.startswith("-")]
            step = {"queued-resources": "qr", "tpu-vm": "vm"}[words[0]] + " " + words[1]
            command = next((a for a in argv if a.startswith("--command=")), "")
            if "describe" in step:
                step += ":workers" if "networkEndpoints" in " ".join(argv) else ""
            elif command:
                step += ":" + next(kind for mark, kind in (("jaxadapt-job:", "probe"), ("accel-venv.sh", "setup"),
                                                           ("setsid", "launch"), ("libtpu_lockfile", "stop"),
                                                           ("tail", "logs")) if mark in command)
            out.append(step)
        return out

    def run(self, *args: str, cwd=REPO, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=60,
                              **kw)


@pytest.fixture
def stubs(tmp_path):
    return Stubs(tmp_path)


def test_every_script_parses():
    assert len(SCRIPTS) >= 12
    for script in SCRIPTS:
        sh("-n", str(script))


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="no shellcheck on PATH (scripts/setup.sh --test installs it with apt-get when run as root)")
def test_shellcheck():
    done = subprocess.run(["shellcheck", "-x", *(str(s.relative_to(REPO)) for s in SCRIPTS)], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_help():
    for name in TPU:
        assert "--dry-run" in sh(f"scripts/tpu/{name}.sh", "--help")
    assert "--gpus-per-node" in sh("scripts/gpu/submit.sh", "--help")
    assert "--cuda" in sh("scripts/gpu/setup.sh", "--help")
    assert "Usage" in sh("scripts/gpu/job.sbatch", "--help")
    assert "--jax-version" in sh("scripts/accel-venv.sh", "--help")


def test_the_runtime_follows_the_accelerator_type():
    at = ["--name", "v5", "--zone", "us-west4-a", "--dry-run"]
    for accel, runtime in (("v6e-8", "v2-alpha-tpuv6e"), ("v5p-16", "v2-alpha-tpuv5"),
                           ("v5litepod-32", "v2-alpha-tpuv5-lite"), ("v4-8", "tpu-ubuntu2204-base")):
        first = sh("scripts/tpu/create.sh", *at, "--type", accel).splitlines()[0]
        assert first == ("gcloud compute tpus queued-resources create v5 --node-id=v5 --zone=us-west4-a "
                         f"--accelerator-type={accel} --runtime-version={runtime} --spot")
    done = subprocess.run(["bash", "scripts/tpu/create.sh", *at, "--type", "v9x-8"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 2 and "pass --version" in done.stderr


def test_tpu_dry_run_commands():
    at = ["--name", "v5", "--zone", "us-west4-a", "--dry-run"]
    out = sh("scripts/tpu/create.sh", *at, "--reserved", "--internal-ips", "--valid-until-duration", "6h").splitlines()
    assert out[0] == ("gcloud compute tpus queued-resources create v5 --node-id=v5 --zone=us-west4-a "
                      "--accelerator-type=v5litepod-8 --runtime-version=v2-alpha-tpuv5-lite --reserved --internal-ips "
                      "--valid-until-duration=6h")
    assert out[-1] == ("gcloud compute tpus queued-resources describe v5 --zone=us-west4-a "
                       "'--format=value(state.state)'")
    assert sh("scripts/tpu/create.sh", *at, "--direct", "--on-demand").strip() == (
        "gcloud compute tpus tpu-vm create v5 --zone=us-west4-a --accelerator-type=v5litepod-8 "
        "--version=v2-alpha-tpuv5-lite")
    setup = sh("scripts/tpu/setup.sh", *at, "--repo", "https://example.org/jaxadapt.git", "--ref", "v1")
    assert "--worker=all" in setup and "git clone -q https://example.org/jaxadapt.git" in setup
    assert "fetch -q origin v1" in setup and "checkout -q -f --detach FETCH_HEAD" in setup
    assert f"bash scripts/accel-venv.sh --accel tpu --jax-version {JAX}" in setup and "--with-tests" not in setup
    assert "--with-tests" in sh("scripts/tpu/setup.sh", *at, "--repo", "u", "--with-tests")
    copy = sh("scripts/tpu/setup.sh", *at, "--internal-ips").splitlines()
    assert copy[1].startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in copy[1]
    assert copy[2].endswith("--internal-ip '--command=mkdir -p ~/jaxadapt && tar xzf ~/jaxadapt-src.tgz -C ~/jaxadapt"
                            f" && cd ~/jaxadapt && bash scripts/accel-venv.sh --accel tpu --jax-version {JAX}'")
    assert sh("scripts/tpu/delete.sh", *at).strip() == (
        "gcloud compute tpus queued-resources delete v5 --zone=us-west4-a --force --quiet")
    assert sh("scripts/tpu/delete.sh", *at, "--direct").strip() == (
        "gcloud compute tpus tpu-vm delete v5 --zone=us-west4-a --quiet")
    logs = shlex.split(sh("scripts/tpu/logs.sh", *at, "--worker", "3"))
    assert "--worker=3" in logs and "tail -n 200" in logs[-1]
    assert "--worker=all" in sh("scripts/tpu/logs.sh", *at) and "-F" in sh("scripts/tpu/logs.sh", *at, "--follow")
    stop = sh("scripts/tpu/stop.sh", *at, "--job", "sweep")
    assert "--worker=all" in stop and "kill -TERM -- -$p" in stop and "rm -f /tmp/libtpu_lockfile" in stop
    babysit = sh("scripts/tpu/babysit.sh", *at, "--runs-root", "gs://b/runs", "--", "jaxadapt", "train", "x.yaml")
    assert "queued-resources delete v5" in babysit and "queued-resources create v5" in babysit
    assert "libtpu_lockfile" in babysit and babysit.count("setsid nohup") == 2


def test_create_waits_for_active_and_reports_failure(stubs):
    stubs.answer("gcloud", "qr-state", "0|WAITING_FOR_RESOURCES", "0|PROVISIONING", "0|ACTIVE")
    done = stubs.run("scripts/tpu/create.sh", "--name", "v6", "--zone", "z", "--type", "v6e-16", "--poll", "0")
    assert done.returncode == 0, done.stderr
    assert stubs.steps() == ["qr create", "qr describe", "qr describe", "qr describe"]
    assert "queued resource v6: PROVISIONING" in done.stderr and "queued resource v6: ACTIVE" in done.stderr
    stubs.log.unlink()
    for failed in ("FAILED", "SUSPENDED"):
        stubs.answer("gcloud", "qr-state", "0|WAITING_FOR_RESOURCES", f"0|{failed}")
        done = stubs.run("scripts/tpu/create.sh", "--name", "v6", "--zone", "z", "--poll", "0")
        assert done.returncode == 1 and f"error: queued resource v6 is {failed}" in done.stderr


def babysit_args(*extra):
    return ["scripts/tpu/babysit.sh", "--name", "v6", "--zone", "z", "--type", "v6e-16", "--poll", "0",
            "--jax-version", JAX, "--repo", "https://example.org/j.git", "--runs-root", "gs://b/runs", *extra,
            "--", "jaxadapt", "train", "configs/x.yaml"]


def test_babysit_from_nothing_creates_waits_sets_up_launches_and_ends_with_the_job(stubs):
    stubs.answer("gcloud", "qr-state", "1|ERROR: (gcloud) NOT_FOUND: Resource v6 was not found",
                 "0|WAITING_FOR_RESOURCES", "0|ACTIVE")
    stubs.answer("gcloud", "node-state", "0|READY")
    stubs.answer("gcloud", "endpoints", "0|10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4")
    stubs.answer("gcloud", "probe", r"0|jaxadapt-job: running\njaxadapt-job: running",
                 r"0|jaxadapt-job: 0\njaxadapt-job: running", r"0|jaxadapt-job: 0\njaxadapt-job: 0")
    done = stubs.run(*babysit_args())
    assert done.returncode == 0, done.stderr
    assert stubs.steps() == [
        "qr describe",                                        # nothing there
        "qr create", "qr describe", "qr describe",            # create.sh: waits until ACTIVE
        "vm ssh:setup", "vm describe:workers", "vm ssh:launch",
        "qr describe", "vm describe", "vm ssh:probe",         # running
        "qr describe", "vm describe", "vm ssh:probe",         # one worker done, one running
        "qr describe", "vm describe", "vm ssh:probe"]         # done everywhere: exit 0
    create = stubs.calls()[1]
    assert "--runtime-version=v2-alpha-tpuv6e" in create and "--spot" in create
    launch = next(a for a in stubs.calls()[6] if a.startswith("--command="))
    assert "jaxadapt train configs/x.yaml runs_root=gs://b/runs" in launch
    setup = next(a for a in stubs.calls()[4] if a.startswith("--command="))
    assert f"--jax-version {JAX}" in setup and "fetch -q origin HEAD" in setup
    assert "job jaxadapt finished (exit 0 on every worker)" in done.stderr


def test_babysit_recreates_a_preempted_tpu_and_relaunches_the_same_run(stubs):
    stubs.answer("gcloud", "qr-state", "0|ACTIVE", "0|SUSPENDED", "0|WAITING_FOR_RESOURCES", "0|ACTIVE")
    stubs.answer("gcloud", "node-state", "0|READY")
    stubs.answer("gcloud", "endpoints", "0|10.0.0.1,10.0.0.2")
    stubs.answer("gcloud", "probe", r"0|jaxadapt-job: running\njaxadapt-job: running",
                 r"0|jaxadapt-job: 0\njaxadapt-job: 0")
    done = stubs.run(*babysit_args())
    assert done.returncode == 0, done.stderr
    assert stubs.steps() == [
        "qr describe", "vm describe", "vm ssh:probe",         # running
        "qr describe",                                        # SUSPENDED: preempted
        "qr delete", "qr create", "qr describe", "qr describe",
        "vm ssh:setup", "vm describe:workers", "vm ssh:launch",
        "qr describe", "vm describe", "vm ssh:probe"]
    launches = [c for c in stubs.calls() if any("setsid" in a for a in c)]
    assert len(launches) == 1 and "TPU v6 is SUSPENDED: recreating it (recovery 1 of 20)" in done.stderr


def test_babysit_of_a_direct_vm_recreates_it_when_preempted(stubs):
    stubs.answer("gcloud", "node-state", "0|READY", "0|PREEMPTED", "0|READY")
    stubs.answer("gcloud", "endpoints", "0|10.0.0.1")
    stubs.answer("gcloud", "probe", "0|jaxadapt-job: running", "0|jaxadapt-job: 0")
    done = stubs.run(*babysit_args("--direct"))
    assert done.returncode == 0, done.stderr
    assert stubs.steps() == ["vm describe", "vm ssh:probe", "vm describe", "vm delete", "vm create", "vm ssh:setup",
                             "vm describe:workers", "vm ssh:launch", "vm describe", "vm ssh:probe"]


def test_babysit_relaunches_a_job_that_stopped_on_a_tpu_that_stayed_up_and_stops_at_a_crash(stubs):
    stubs.answer("gcloud", "qr-state", "0|ACTIVE")
    stubs.answer("gcloud", "node-state", "0|READY")
    stubs.answer("gcloud", "endpoints", "0|10.0.0.1")
    stubs.answer("gcloud", "probe", "0|jaxadapt-job: 75", "0|jaxadapt-job: 75", "0|jaxadapt-job: died",
                 "0|jaxadapt-job: 1")
    done = stubs.run(*babysit_args())
    assert done.returncode == 1 and "job jaxadapt failed (exit 1)" in done.stderr
    assert [s for s in stubs.steps() if "describe" not in s] == [
        "vm ssh:probe",                                       # 75: wait one check for the TPU to follow
        "vm ssh:probe", "vm ssh:stop", "vm ssh:launch",       # still up: relaunch
        "vm ssh:probe", "vm ssh:stop", "vm ssh:launch",       # died (no status): relaunch
        "vm ssh:probe", "vm ssh:probe"]                       # 1, and the TPU still up: a crash is not retried


def test_launch_refuses_a_local_run_root_on_a_pod_slice(stubs):
    stubs.answer("gcloud", "endpoints", "0|10.0.0.1,10.0.0.2")
    at = ["scripts/tpu/launch.sh", "--name", "v5", "--zone", "z"]
    for extra, why in (([], "pass --runs-root gs://BUCKET/runs"), (["--runs-root", "/home/me/runs"], "--shared-fs")):
        done = stubs.run(*at, *extra, "--", "jaxadapt", "train", "x.yaml")
        assert done.returncode == 2 and why in done.stderr, done.stderr
    assert stubs.steps() == ["vm describe:workers", "vm describe:workers"]  # nothing launched
    for extra in (["--runs-root", "gs://b/runs"], ["--runs-root", "/mnt/nfs/runs", "--shared-fs"]):
        assert stubs.run(*at, *extra, "--", "jaxadapt", "train", "x.yaml").returncode == 0
    assert stubs.run(*at, "--workers", "1", "--", "jaxadapt", "train", "x.yaml").returncode == 0


def _fake_worker(home: Path, jaxadapt: str) -> dict:
    """A TPU worker's home with a set-up checkout whose `jaxadapt` is the shell function JAXADAPT, and the metadata
    server (curl) answering as worker 1 of two."""
    (home / "jaxadapt/.venv/bin").mkdir(parents=True)
    (home / "jaxadapt/.venv/bin/activate").write_text(f"jaxadapt() {{ {jaxadapt}; }}\n")
    (home / "jaxadapt/.venv/bin/jaxadapt").write_text("")
    (home / "jaxadapt/.venv/bin/jaxadapt").chmod(0o755)
    (home / "bin").mkdir()
    (home / "bin/curl").write_text(
        '#!/bin/bash\ncase "$*" in *agent-worker-number) echo -n 1;;\n'
        '*worker-network-endpoints) echo -n unknown:unknown:10.0.0.1,unknown:unknown:10.0.0.2;; esac\n')
    (home / "bin/curl").chmod(0o755)
    return {"HOME": str(home), "PATH": f"{home}/bin:/usr/bin:/bin"}


def _remote(printed: str) -> str:
    """The --command of the one gcloud ssh line a --dry-run printed."""
    line = next(li for li in printed.splitlines() if li.startswith("gcloud compute tpus tpu-vm ssh"))
    return next(a for a in shlex.split(line) if a.startswith("--command=")).removeprefix("--command=")


def _wait_for(path: Path, timeout=20):
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"no {path}"
        time.sleep(0.02)


def test_tpu_launch_runs_each_command_on_every_worker_and_ships_the_configs(tmp_path):
    """The printed command, replayed with fake gcloud and jaxadapt, runs exactly the intended argv, appends to the
    log with a header, records the exit status, and the relative config files it names arrive with it."""
    work = tmp_path / "work"
    (work / "sweep").mkdir(parents=True)
    (work / "sweep/a.yaml").write_text("name: a\n")
    (work / "sweep/launch.txt").write_text("jaxadapt train sweep/a.yaml lora.rank=8\n\njaxadapt run 'b c.yaml'\n")
    done = subprocess.run(["bash", REPO / "scripts/tpu/launch.sh", "--name", "v5", "--zone", "z", "--runs-root",
                           "/mnt/my runs", "--shared-fs", "--workers", "2", "--file", "sweep/launch.txt", "--dry-run"],
                          cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tar, scp, ssh = done.stdout.splitlines()
    assert tar.startswith("tar czf /tmp/jaxadapt-ship-") and tar.endswith(" sweep/a.yaml")
    assert scp.startswith("gcloud compute tpus tpu-vm scp") and "v5:jaxadapt-ship-jaxadapt.tgz --worker=all" in scp
    argv = shlex.split(ssh)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v5"] and "--worker=all" in argv
    home = tmp_path / "home"
    env = _fake_worker(home, 'printf "%s|" "$TPU_WORKER_ID" "$TPU_WORKER_HOSTNAMES" "$@" >> ~/argv; echo >> ~/argv')
    subprocess.run(["tar", "czf", home / "jaxadapt-ship-jaxadapt.tgz", "sweep/a.yaml"], cwd=work, check=True)
    for _ in range(2):  # launched twice: the log is appended to
        subprocess.run(["bash", "-c", _remote(ssh)], env=env, check=True)
        _wait_for(home / "logs/jaxadapt.status")
        (home / "logs/jaxadapt.status").rename(home / "status")
    assert (home / "status").read_text() == "0\n" and (home / "jaxadapt/sweep/a.yaml").read_text() == "name: a\n"
    assert (home / "argv").read_text().splitlines() == 2 * [
        "1|10.0.0.1,10.0.0.2|train|sweep/a.yaml|lora.rank=8|runs_root=/mnt/my runs|",
        "1|10.0.0.1,10.0.0.2|run|b c.yaml|runs_root=/mnt/my runs|"]
    log = (home / "logs/jaxadapt.log").read_text()
    assert log.count("launch.sh: job jaxadapt, worker 1, 2 command(s)") == 2 and log.count(" exit 0") == 2
    assert "jaxadapt train sweep/a.yaml lora.rank=8 runs_root='/mnt/my runs'" in log


def test_stop_signals_the_job_saves_and_clears_the_lockfile_then_launch_works_again(tmp_path):
    """A job whose jaxadapt exits 75 on SIGTERM (as train does): probe says running, stop TERMs its process group,
    the job records 75, the libtpu lockfile goes; a second launch over a running job is refused."""
    home, lock = tmp_path / "home", tmp_path / "libtpu_lockfile"
    env = _fake_worker(home, "bash -c 'trap \"exit 75\" TERM; touch ~/ready; sleep 30 & wait'")
    at = ["--name", "v5", "--zone", "z", "--dry-run"]
    launch = _remote(sh("scripts/tpu/launch.sh", *at, "--workers", "1", "--", "jaxadapt", "train", "x.yaml"))
    stop = _remote(sh("scripts/tpu/stop.sh", *at, "--grace", "20")).replace("/tmp/libtpu_lockfile", str(lock))
    probe = _remote(sh("scripts/tpu/babysit.sh", *at, "--", "x"))  # its first ssh: the job's state

    def state():
        return subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True).stdout.strip()

    assert state() == "jaxadapt-job: none"
    subprocess.run(["bash", "-c", launch], env=env, check=True)
    _wait_for(home / "ready")  # its SIGTERM handler is in place
    assert state() == "jaxadapt-job: running"
    again = subprocess.run(["bash", "-c", launch], env=env, capture_output=True, text=True)
    assert again.returncode == 3 and "still running" in again.stderr
    lock.write_text("")
    out = subprocess.run(["bash", "-c", stop], env=env, capture_output=True, text=True, timeout=60).stdout
    assert "worker 1: job jaxadapt stopped" in out and "removed" in out and not lock.exists()
    _wait_for(home / "logs/jaxadapt.status")
    assert (home / "logs/jaxadapt.status").read_text() == "75\n" and state() == "jaxadapt-job: 75"
    assert "preempted (75)" in (home / "logs/jaxadapt.log").read_text()
    out = subprocess.run(["bash", "-c", stop], env=env, capture_output=True, text=True).stdout
    assert "worker 1: job jaxadapt not running" in out


def test_logs_prefixes_each_line_with_its_worker(tmp_path):
    home = tmp_path / "home"
    env = _fake_worker(home, "true")
    (home / "logs").mkdir()
    (home / "logs/jaxadapt.log").write_text("step 1\nstep 2\n")
    remote = _remote(sh("scripts/tpu/logs.sh", "--name", "v5", "--zone", "z", "--lines", "1", "--dry-run"))
    out = subprocess.run(["bash", "-c", remote], env=env, capture_output=True, text=True).stdout
    assert out == "[worker 1] step 2\n"


def test_setup_with_a_repo_checks_out_the_ref_also_over_an_earlier_clone(tmp_path):
    origin, home = tmp_path / "origin", tmp_path / "home"
    home.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", origin], check=True)
    (origin / "scripts").mkdir()
    (origin / "scripts/accel-venv.sh").write_text('echo "$@" > ~/installed\n')
    subprocess.run([*git, "-C", origin, "add", "."], check=True)
    subprocess.run([*git, "-C", origin, "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "-C", origin, "tag", "v1"], check=True)
    (origin / "later.txt").write_text("later\n")
    subprocess.run([*git, "-C", origin, "add", "."], check=True)
    subprocess.run([*git, "-C", origin, "commit", "-qm", "two"], check=True)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}

    def setup(*ref):
        printed = sh("scripts/tpu/setup.sh", "--name", "v5", "--zone", "z", "--repo", str(origin), *ref,
                     "--jax-version", "0.9.1", "--dry-run")
        subprocess.run(["bash", "-c", _remote(printed)], env=env, check=True, capture_output=True)
        return (home / "jaxadapt/later.txt").exists()

    assert setup("--ref", "v1") is False
    assert (home / "installed").read_text() == "--accel tpu --jax-version 0.9.1\n"
    assert setup() is True  # the default branch: moved on although ~/jaxadapt exists
    assert setup("--ref", "v1") is False


def test_accel_venv_pins_jax_and_replaces_an_old_python(stubs, tmp_path):
    assert sh("scripts/accel-venv.sh", "--print-jax-version").strip() == JAX
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts/accel-venv.sh", repo / "scripts")
    (repo / ".venv/bin").mkdir(parents=True)
    (repo / ".venv/bin/python").write_text("#!/bin/sh\nexit 1\n")  # too old: the version check fails
    (repo / ".venv/bin/python").chmod(0o755)
    done = stubs.run("scripts/accel-venv.sh", "--accel", "cuda12", "--jax-version", "0.10.2", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert stubs.calls() == [["uv", "venv", "--seed", "--python", "3.11", ".venv"],
                             ["uv", "pip", "install", "--python", ".venv/bin/python", "-q", "-e", ".[gcs]",
                              "jax[cuda12]==0.10.2"]]
    stubs.log.unlink()
    assert stubs.run("scripts/accel-venv.sh", "--accel", "tpu", "--with-tests", cwd=repo).returncode == 2  # no version
    assert stubs.run("scripts/accel-venv.sh", "--jax-version", "0.10.2", "--with-tests", cwd=repo).returncode == 0
    assert stubs.calls() == [["uv", "pip", "install", "--python", ".venv/bin/python", "-q", "-e", ".[gcs,test]",
                              "jax[tpu]==0.10.2"]]  # the venv is kept now


def test_slurm_dry_run():
    out = sh("scripts/gpu/submit.sh", "--nodes", "4", "--gpus-per-node", "8", "--dry-run", "--",
             "jaxadapt", "train", "configs/x.yaml", "lora.rank=8")
    assert out.strip() == (f"sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --job-name=jaxadapt "
                           f"--chdir={REPO} --output=logs/%x-%j.out {REPO}/scripts/gpu/job.sbatch train "
                           "configs/x.yaml lora.rank=8")
    assert sh("scripts/gpu/job.sbatch", "--dry-run", "train", "x.yaml").strip() == (
        "srun --kill-on-bad-exit=1 --cpu-bind=none --gpu-bind=none .venv/bin/python -m jaxadapt.cli train x.yaml")
    text = (REPO / "scripts/gpu/job.sbatch").read_text()
    for directive in ("--ntasks-per-node=8", "--gpus-per-node=8", "--signal=TERM@120", "--requeue"):
        assert f"#SBATCH {directive}\n" in text
    assert "--gpus-per-task" not in text.split("set -uo pipefail")[1]


def _slurm_checkout(tmp_path) -> tuple[Path, Path]:
    """A checkout (job.sbatch, .venv/bin/python) and the spool copy of the script that sbatch would run."""
    repo = tmp_path / "repo"
    (repo / "scripts/gpu").mkdir(parents=True)
    shutil.copy(REPO / "scripts/gpu/job.sbatch", repo / "scripts/gpu")
    (repo / ".venv/bin").mkdir(parents=True)
    (repo / ".venv/bin/python").write_text("")
    (repo / ".venv/bin/python").chmod(stat.S_IRWXU)
    spool = tmp_path / "spool/job4242"
    spool.mkdir(parents=True)
    shutil.copy(REPO / "scripts/gpu/job.sbatch", spool / "slurm_script")
    return repo, spool / "slurm_script"


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "jx", "SLURM_NTASKS_PER_NODE": "8", "SLURM_GPUS_ON_NODE": "8"}


def test_slurm_job_requeues_itself_after_a_preemption_exit_from_any_directory(stubs, tmp_path):
    repo, script = _slurm_checkout(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stubs.env.update(SLURM, SLURM_SUBMIT_DIR=str(repo))  # sbatch run in the checkout, the job started elsewhere
    stubs.answer("srun", "default", "75|")
    done = stubs.run(str(script), "train", "x.yaml", cwd=elsewhere)
    assert done.returncode == 75
    assert stubs.calls() == [["srun", "--kill-on-bad-exit=1", "--cpu-bind=none", "--gpu-bind=none",
                              ".venv/bin/python", "-m", "jaxadapt.cli", "train", "x.yaml"],
                             ["scontrol", "requeue", "4242"]]
    stubs.log.unlink()
    stubs.answer("srun", "default", "0|")
    stubs.env.update(SLURM_RESTART_COUNT="1", SLURM_SUBMIT_DIR=str(elsewhere))  # found by the job's dir (--chdir)
    assert stubs.run(str(script), "train", "x.yaml", cwd=repo).returncode == 0
    assert [c[0] for c in stubs.calls()] == ["srun"]  # finished: no requeue
    log = (repo / "logs/jx-4242.out").read_text()
    assert log.count("job 4242 start") == 2 and "requeued job 4242" in log and "srun exit 0" in log


def test_slurm_job_survives_its_own_sigterm_until_the_tasks_saved(stubs, tmp_path):
    """A preemption signals the batch shell and the tasks: the shell waits for srun's 75 and requeues."""
    repo, script = _slurm_checkout(tmp_path)
    stubs.env.update(SLURM, JAXADAPT_REPO=str(repo))
    stubs.answer("srun", "default", "0|")
    (stubs.dir / "srun.sleep").write_text("")  # srun waits; exits 75 on SIGTERM
    proc = subprocess.Popen(["bash", str(script), "train", "x.yaml"], cwd=tmp_path, env=stubs.env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while not stubs.calls():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 75
    assert [c[:2] for c in stubs.calls()] == [["srun", "--kill-on-bad-exit=1"], ["scontrol", "requeue"]]
    assert "batch shell: SIGTERM" in (repo / "logs/jx-4242.out").read_text()


def test_slurm_job_refuses_fewer_tasks_than_gpus(stubs, tmp_path):
    repo, script = _slurm_checkout(tmp_path)
    stubs.env.update(SLURM, SLURM_NTASKS_PER_NODE="1", JAXADAPT_REPO=str(repo))
    assert stubs.run(str(script), "train", "x.yaml").returncode == 2
    assert stubs.calls() == [] and "one JAX process per GPU" in (repo / "logs/jx-4242.out").read_text()
