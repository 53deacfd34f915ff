"""`run_recipe`: the stages of a recipe in order, each in a child process, resumable stage by stage.

runs_root/NAME/
  recipe.yaml              the resolved recipe (references substituted, train configs spelled out)
  stages/STAGE/stage.json  status, config hash, upstream, outputs; rewritten atomically at each change
  stages/STAGE/log.txt     the stage's console output
  stages/STAGE/out         its output (a dir, or e.g. results.json for eval; train: the run dir)

A stage is skipped when its record says complete, with the same config hash, after the same completion of the
stage before it (`upstream`, that stage's `run_id`), and its output exists. So a changed config re-runs that
stage and, through the chain of run ids, every stage after it. A stage that crashed or was stopped keeps its
output, so a train stage resumes from its last checkpoint; outputs left by a different config are removed first.

Each stage runs as `python -m jaxadapt.recipes.stage` (why a process of its own: recipes/stage.py), which calls
the stage's entry point, the function its jaxadapt command calls, with the typed config the plan checked; a bad
input there is raised here as the same UserError. SIGTERM/SIGINT are passed on to the stage (train saves and exits
75 or 130) and the stage is recorded as stopped, never as complete; the runner then exits with the same status as a
stopped `train` (errors.PREEMPTED / INTERRUPTED), so a watcher resumes a recipe as it resumes a run.

On several hosts (`jaxadapt run` started on every worker, runs_root on storage they share), the COLLECTIVE stages
(train, calibrate, eval) run on every process, one JAX process each; the others (tokenizers, vocab adapt, propagate,
export, ...) run once, on process 0, as a single process on its CPU (a pod slice's accelerators start only all
together), while the others wait. Process 0 alone writes the records, so the stage chain is its.

runs_root may be a URL (gs://...): records and resolved configs are then single-object uploads, each stage's log is
written locally while it runs and appended to log.txt in the bucket when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from jaxadapt import fs
from jaxadapt.config.loader import save_resolved
from jaxadapt.errors import INTERRUPTED, PREEMPTED, Stopped, UserError
from jaxadapt.fs import atomic_file
from jaxadapt.recipes.plan import PlannedStage, plan, resolved, run_dir, stage_dir
from jaxadapt.recipes.schema import Recipe

RECORD = "stage.json"
LOG = "log.txt"
COLLECTIVE = ("train", "calibrate", "eval")  # commands that start jax.distributed: every process takes part


def run_recipe(recipe: Recipe, source: str | Path, dry_run: bool = False) -> Path:
    """Run (or with `dry_run` only list) the stages not done yet; returns the run dir."""
    from jaxadapt.train.distributed import process_slot  # (jax is imported by the stages, not the runner)

    stages = plan(recipe, source)
    root = run_dir(recipe)
    index, count = process_slot()
    if not dry_run and index == 0:
        save_resolved(resolved(recipe, stages), root, "recipe.yaml")
    upstream = None
    for st in stages:
        sdir = stage_dir(recipe, st.name)
        record = read_record(sdir)
        key = {"config_hash": st.config_hash, "upstream": upstream}
        if _complete(record, key) and fs.exists(str(st.out)):
            _say(f"[{st.name}] done with config {st.config_hash}: skipped")
            upstream = record["run_id"]
        elif dry_run:
            _say(f"[{st.name}] would run: {st.describe()}")
            upstream = "pending"
        elif index == 0:
            upstream = _run_stage(st, sdir, record, key, alone=count > 1 and st.kind not in COLLECTIVE)
        else:
            upstream = _follow_stage(st, sdir, key, index)
    return root


def _complete(record: dict | None, key: dict) -> bool:
    return bool(record) and record.get("status") == "complete" and _key(record) == key


def _follow_stage(st: PlannedStage, sdir: Path, key: dict, index: int) -> str:
    """A process other than 0: wait for process 0's record of the stage; for a train stage, train with the others
    once process 0 has started it (it first clears an output of another config)."""
    if st.kind in COLLECTIVE:
        _say(f"[{st.name}] process {index}: waiting for process 0 to start it")
        _await(st, sdir, key, ("running", "complete"))
        _say(f"[{st.name}] process {index}: running: {st.describe()}")
        code, stopped, error = execute(st.call, sdir / f"log.process-{index}.txt")
        if stopped or code in (PREEMPTED, INTERRUPTED):
            _say(f"[{st.name}] process {index}: stopped; run the same command again to continue")
            raise _stopped(code, stopped)
        if error is not None:
            raise UserError(f"stage {st.name} ({st.kind}), process {index}: {error}")
        if code:
            raise UserError(f"stage {st.name}: process {index} exited with code {code}")
    else:
        _say(f"[{st.name}] process {index}: waiting for process 0 to run it")
    return _await(st, sdir, key, ("complete",))["run_id"]


def _stopped(code: int, signal_name: str | None) -> Stopped:
    """The runner's own exit for a stage that was stopped: train's status (130 for Ctrl-C, else 75)."""
    return Stopped(INTERRUPTED if code == INTERRUPTED or signal_name == "SIGINT" else PREEMPTED)


def _await(st: PlannedStage, sdir: Path, key: dict, statuses: tuple[str, ...], grace: float = 120.0) -> dict:
    """Poll process 0's record of the stage until it has this key and one of `statuses`. A failed or stopped record
    counts once it has stood for `grace` seconds (it may be left by an earlier attempt that process 0 is about to
    replace); a running stage has no time limit."""
    ended_since = None
    while True:
        record = read_record(sdir)
        if record and _key(record) == key and record.get("status") in statuses:
            return record
        ended = record is not None and record.get("status") in ("failed", "stopped")
        ended_since = (ended_since or time.monotonic()) if ended else None
        if ended_since is not None and time.monotonic() - ended_since > grace:
            raise UserError(f"stage {st.name}: process 0 recorded it as {record['status']} ({sdir / RECORD})")
        time.sleep(0.5)


def read_record(sdir: Path) -> dict | None:
    try:
        return json.loads(fs.read_text(sdir / RECORD))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def execute(call: dict, log: Path, alone: bool = False) -> tuple[int, str | None, str | None]:
    """Run one stage (`PlannedStage.call`) in a child, echoing its output into `log`; returns (exit code, signal that
    stopped it, the message of the UserError it failed with). alone: as a single process on the CPU, whatever the
    launcher's environment says. A `log` URL (an object store has no append) gets the output when the child ends."""
    if fs.is_url(str(log)):
        with _scratch("jaxadapt-stage-log-") as tmp:
            try:
                return execute(call, tmp, alone)
            finally:
                fs.append_text(log, tmp.read_text(encoding="utf-8", errors="replace"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if alone:
        from jaxadapt.train.distributed import MULTI_PROCESS_ENV

        env = {k: v for k, v in env.items() if k not in MULTI_PROCESS_ENV} | {"JAX_PLATFORMS": "cpu"}
    with _scratch("jaxadapt-stage-call-") as call_file, _scratch("jaxadapt-stage-error-") as error_file:
        call_file.write_text(json.dumps(call), encoding="utf-8")  # a file: a long config would overflow argv
        proc = subprocess.Popen([sys.executable, "-m", "jaxadapt.recipes.stage", str(call_file), str(error_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        code, stopped = _follow(proc, log)
        return code, stopped, error_file.read_text(encoding="utf-8") or None


def _follow(proc: subprocess.Popen, log: Path) -> tuple[int, str | None]:
    """Echo the child's output into `log` until it ends, passing SIGTERM/SIGINT on to it."""
    stopped: list[str] = []

    def forward(signum, _frame):
        stopped.append(signal.Signals(signum).name)
        proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with open(log, "a") as f:
            line = "\n"
            for line in proc.stdout:
                sys.stdout.write(line)
                f.write(line)
            if not line.endswith("\n"):  # keep the runner's next message on a line of its own
                sys.stdout.write("\n")
        return proc.wait(), (stopped[0] if stopped else None)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _run_stage(st: PlannedStage, sdir: Path, record: dict | None, key: dict, alone: bool = False) -> str:
    out = str(st.out)
    inside = out.startswith(str(sdir).rstrip("/") + "/")
    if record is not None and _key(record) != key and inside and fs.exists(out):
        _say(f"[{st.name}] removing {out}: written with another config or upstream")
        if fs.isdir(out):
            fs.rmtree(out)
        else:
            fs.path(out).unlink()
    sdir.mkdir(parents=True, exist_ok=True)
    base = {"stage": st.name, "kind": st.kind, **key}
    _write_record(sdir, {**base, "status": "running", "started": _now()})
    _say(f"[{st.name}] running: {st.describe()}")
    t0 = time.time()
    code, stopped, error = execute(st.call, sdir / LOG, alone)
    seconds = round(time.time() - t0, 1)
    stopped = stopped or ("a preemption notice" if code == PREEMPTED else None)
    if stopped or code != 0 or not fs.exists(out):
        status = "stopped" if stopped else "failed"
        said = {"error": error} if error is not None else {}
        _write_record(sdir, {**base, "status": status, "exit_code": code, **said, "seconds": seconds})
        if stopped:
            _say(f"[{st.name}] stopped by {stopped}; run the same command again to continue")
            raise _stopped(code, stopped)
        if error is not None:  # bad input, as the command would have said it
            raise UserError(f"stage {st.name} ({st.kind}): {error}")
        why = f"exited with code {code}" if code else f"exited 0 but wrote no {out}"
        raise UserError(f"stage {st.name} ({st.kind}) {why}; its log: {sdir / LOG}")
    run_id = uuid.uuid4().hex
    _write_record(sdir, {**base, "status": "complete", "run_id": run_id, "outputs": {"out": st.out},
                         "seconds": seconds, "finished": _now()})
    _say(f"[{st.name}] complete in {seconds} s: {st.out}")
    return run_id


@contextlib.contextmanager
def _scratch(prefix: str):
    """An empty local file for the duration, then removed."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".txt")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        os.unlink(name)


def _key(record: dict) -> dict:
    return {"config_hash": record.get("config_hash"), "upstream": record.get("upstream")}


def _write_record(sdir: Path, record: dict) -> None:
    with atomic_file(sdir / RECORD) as f:
        json.dump(record, f, indent=2)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _say(msg: str) -> None:
    print(msg, flush=True)
