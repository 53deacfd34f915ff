"""Guards of a run dir: one trainer at a time, resume only with the config the checkpoints were made with (the mesh
aside), a metrics log without the rows of steps that a resume repeats, and no run dir left by a failed start.

The lock is held by process 0 for the whole run. On a local disk it is an advisory `flock` on run_dir/.lock; the
kernel drops it when the process dies, so a killed trainer never leaves a stale lock (NFS does not honour it). On an
object store (`gs://`) nothing is dropped when a VM is reclaimed, so the lock is a lease (`Lease`): an object
created only if absent and refreshed by its holder; one that stops being refreshed expires, and the resume of a
preempted run waits for that, while a second trainer that sees the lease refreshed is refused. Either way the
holder's host, pid and start time are in the file for the refusal message.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
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
# Keys that say where or how the run computes, not what: changed freely on resume (a preempted job may come back on a
# slice of another size or another kind of accelerator; a run made before attention_impl defaulted to "auto" recorded
# null), and recorded in the history like any change.
WHERE = ("mesh.", "model.remat", "model.attention_impl", "model.attention_chunk")


LEASE_SECONDS = 120.0  # a lease not refreshed for this long is a dead holder's (JAXADAPT_LEASE_SECONDS overrides)


def _holder() -> str:
    started = datetime.datetime.now().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()} (since {started})"


def _in_use(run_dir, holder: str) -> UserError:
    return UserError(f"run dir {run_dir} is in use by {holder}; wait for it to finish, or train under another name")


class Lease:
    """run_dir/.lock on an object store: {"holder", "token", "beat", "time"}, created only if absent (fs.create_new),
    rewritten every `seconds / 4` by a daemon thread with `beat` + 1, deleted on exit.

    Taking it when it exists: watch it. If its beat moves, the holder is alive: refused. If it has not been refreshed
    for `seconds` (by the holder's clock; hosts' clocks agree far better than that), the holder died without
    releasing it, as a preempted VM does: it is deleted and taken. So a resume waits at most `seconds` after a hard
    kill, none after a clean exit, and a concurrent second trainer is refused within about `seconds / 4`.
    Every delete and rewrite names the version it expects (fs.remove_version, fs.replace_version; on GCS the object
    generation, which the store checks): a takeover never removes a lease created meanwhile, and a holder that wakes
    from a stall longer than `seconds` finds its lease gone instead of overwriting its successor's."""

    def __init__(self, run_dir, seconds: float | None = None):
        self.run_dir = str(run_dir).rstrip("/")
        self.path = f"{self.run_dir}/{LOCK}"
        self.seconds = float(seconds or os.environ.get("JAXADAPT_LEASE_SECONDS", LEASE_SECONDS))
        self.record = {"holder": _holder(), "token": uuid.uuid4().hex, "beat": 0, "time": time.time()}
        self.version: str | None = None  # of the lease this trainer wrote last (fs.read_version)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        first = None
        while True:
            self.record = {**self.record, "time": time.time()}  # fresh, however long the wait before it was
            if fs.create_new(self.path, json.dumps(self.record)):
                _, self.version = self._read()  # a fresh lease: nobody else deletes it before it expires
                break
            held, version = self._read()
            if held is None:  # released between the two calls
                continue
            if first is not None and (held.get("token"), held.get("beat")) != (first.get("token"), first.get("beat")):
                raise _in_use(self.run_dir, held.get("holder", "another trainer"))
            if time.time() - float(held.get("time", 0)) > self.seconds:
                # only the version judged expired is deleted: of two trainers taking over the same dead lease, the
                # later delete fails rather than removing the lease the other has just created
                if fs.remove_version(self.path, version):
                    print(f"warning: {self.path}: the lease of {held.get('holder')} was not refreshed for "
                          f"{self.seconds:.0f} s (its trainer is gone); taking it over", file=sys.stderr, flush=True)
                continue
            if first is None:
                first = held
                print(f"{self.path}: held by {held.get('holder')}; waiting up to {self.seconds:.0f} s for it to be "
                      "refreshed (a live trainer: refused) or to expire (a stopped one: taken over)",
                      file=sys.stderr, flush=True)
            time.sleep(self.seconds / 8)
        self._thread = threading.Thread(target=self._refresh, name="jaxadapt-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.version is not None:  # only the lease as this trainer last wrote it, never a successor's
            fs.remove_version(self.path, self.version)

    def _read(self) -> tuple[dict | None, str | None]:
        """(the lease, its version for fs.remove_version); (None, None) when there is none."""
        got = fs.read_version(self.path)
        if got is None:
            return None, None
        try:
            return json.loads(got[0]), got[1]
        except ValueError:  # not ours to judge: a torn or foreign file counts as a holder that never refreshes
            return {"holder": f"an unreadable {LOCK}", "time": 0}, got[1]

    def _refresh(self) -> None:
        while not self._stop.wait(self.seconds / 4):
            try:
                if not self.beat():
                    return
            except Exception as e:  # noqa: BLE001 (a network blip: the next beat retries; a lease lasts 4 beats)
                print(f"warning: {self.path}: lease not refreshed ({type(e).__name__}: {e})", file=sys.stderr,
                      flush=True)

    def beat(self) -> bool:
        """Rewrite the lease with the next beat, only over the version this trainer wrote last; False (with a
        warning) when the lease is no longer this trainer's."""
        for _ in range(2):
            record = {**self.record, "beat": self.record["beat"] + 1, "time": time.time()}
            version = None if self.version is None else fs.replace_version(self.path, json.dumps(record),
                                                                            self.version)
            if version is not None:
                self.record, self.version = record, version
                return True
            held, current = self._read()
            if held is None or held.get("token") != self.record["token"]:
                self.version = None
                print(f"warning: {self.path}: this trainer's lease was taken over by "
                      f"{(held or {}).get('holder', 'nobody')}; another trainer may now write this run dir",
                      file=sys.stderr, flush=True)
                return False
            # still ours (a rewrite whose answer was lost landed after all): go on from what is there
            self.record, self.version = held, current
        return True  # ours, but not rewritten twice running: the next beat tries again


class RunLock:
    def __init__(self, run_dir, active: bool = True):
        self.path = fs.path(run_dir) / LOCK
        self.lease = Lease(run_dir) if active and fs.is_url(str(run_dir)) else None
        self.active = active and self.lease is None
        self.fh = None

    def __enter__(self):
        if self.lease is not None:
            self.lease.acquire()
            return self
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
            raise _in_use(self.path.parent, holder) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{_holder()}\n")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc):
        if self.lease is not None:
            self.lease.release()
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
    fixed = [k for k in changes if k.startswith(FIXED) and not k.startswith(WHERE)]
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
