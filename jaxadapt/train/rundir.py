"""Guards of a run dir: one trainer at a time, resume only with the config the checkpoints were made with (the mesh
aside), a metrics log without the rows of steps that a resume repeats, and no run dir left by a failed start.

The lock is an advisory `flock` on run_dir/.lock held by process 0 for the whole run; the kernel drops it when the
process dies, so a killed trainer never leaves a stale lock on a local disk (NFS does not honour it). The holder's
host, pid and start time are written into the file for the refusal message. A run dir on an object store (`gs://`)
is not locked: a lock object would outlive a preempted holder and block the very resume it should allow.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path

import yaml

from jaxadapt.errors import UserError
from jaxadapt import fs

LOCK = ".lock"
HISTORY = "config_history.jsonl"
# Keys whose change makes the checkpoints another model or another data stream: never changed on resume.
FIXED = ("model.", "lora.", "data.", "train.trainable", "train.objective", "train.seq_len", "train.batch_size",
         "train.seed")
IGNORED = ("runs_root", "name")  # they locate the run dir itself
# Keys that say where the run computes, not what: changed freely on resume (a preempted job may come back on a slice
# of another size), and recorded in the history like any change.
WHERE = ("mesh.",)


class RunLock:
    def __init__(self, run_dir, active: bool = True):
        self.path = fs.path(run_dir) / LOCK
        self.active = active and not fs.is_url(str(run_dir))
        self.fh = None

    def __enter__(self):
        if not self.active:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"run dir {self.path.parent} is in use by {holder}; wait for it to finish, or train "
                            "under another name") from None
        fh.seek(0)
        fh.truncate()
        started = datetime.datetime.now().isoformat(timespec="seconds")
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} (since {started})\n")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.seek(0)
            self.fh.truncate()
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def check_resume(run_dir: Path, config: dict, step: int, allow_changes: bool) -> dict[str, tuple]:
    """Compare `config` (to_dict of the new RunConfig) with the run's recorded config.yaml before resuming at `step`.

    Returns {dotted key: (recorded, new)} of the changes, which the caller records with `record_changes`. A change
    of a FIXED key is an error; any other change but of WHERE keys needs `allow_changes`."""
    recorded_file = fs.path(run_dir) / "config.yaml"
    if not recorded_file.is_file():
        return {}
    try:
        recorded = yaml.safe_load(recorded_file.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{recorded_file}: not readable YAML ({e}); restore it or train under another name") from None
    old, new = _flat(recorded), _flat(json.loads(json.dumps(config)))
    changes = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
               if k not in IGNORED and old.get(k) != new.get(k)}
    fixed = [k for k in changes if k.startswith(FIXED)]
    if fixed:
        raise UserError(f"resume of {run_dir} at step {step}: {_listing(changes, fixed)} differ from the run's "
                        "config.yaml, and the checkpoints hold another model or data stream; train under another "
                        "name to change them")
    asked = [k for k in changes if not k.startswith(WHERE)]
    if asked and not allow_changes:
        raise UserError(f"resume of {run_dir} at step {step}: {_listing(changes, asked)} differ from the "
                        "run's config.yaml; pass --allow-config-change to resume with them (recorded in "
                        f"{HISTORY}), or restore the old values")
    return changes


def record_changes(run_dir: Path, step: int, changes: dict[str, tuple]) -> None:
    if not changes:
        return
    row = {"step": step, "time": datetime.datetime.now().isoformat(timespec="seconds"),
           "changed": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}}
    fs.append_text(fs.path(run_dir) / HISTORY, json.dumps(row) + "\n")


def truncate_metrics(run_dir: Path, step: int) -> int:
    """Drop the metrics rows after `step` (logged before a kill, and about to be logged again); returns how many."""
    path = fs.path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    keep = [line for line in lines if _step_of(line) <= step]
    if len(keep) < len(lines):
        fs.write_text(path, "".join(keep))
    return len(lines) - len(keep)


def first_missing(path):
    """The highest missing dir on the way to `path` (what creating it makes), None if it exists. On an object
    store, dirs are prefixes: the run dir itself when nothing is under it."""
    if fs.is_url(str(path)):
        return None if fs.has_files(path) else fs.path(path)
    path = Path(path).absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def remove_if_unused(run_dir, created) -> None:
    """Remove a run dir that this trainer created (with the missing dirs above it, up to `created`) when it failed
    before it logged a step or began a checkpoint (a model that does not load, a shape error): a failed start leaves
    nothing behind. Anything else is kept."""
    run_dir = fs.path(run_dir) if fs.is_url(str(run_dir)) else Path(run_dir).absolute()
    ckpts, metrics = run_dir / "checkpoints", run_dir / "metrics.jsonl"
    if fs.has_files(ckpts) or (metrics.is_file() and metrics.read_text().strip()):
        return
    fs.rmtree(run_dir)
    if fs.is_url(str(run_dir)):
        return
    d = run_dir
    while d != created and d.parent.is_dir() and not any(d.parent.iterdir()):
        d = d.parent
        d.rmdir()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")  # a torn last line from a kill


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _listing(changes: dict[str, tuple], keys: list[str]) -> str:
    return ", ".join(f"{k} ({changes[k][0]!r} -> {changes[k][1]!r})" for k in keys)
