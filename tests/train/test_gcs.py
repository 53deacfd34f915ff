"""A run whose model, data, run dir and export all live in a `gs://` bucket, against a GCS emulator on localhost
(gcp-storage-emulator, started here): trained, killed with SIGKILL after a checkpoint, resumed to the losses of an
uninterrupted local run (once the killed trainer's lease on the run dir expired), exported to the bucket, and read
back bit for bit. The lease itself: a second trainer refused, a dead holder's lease taken over."""

import json
import signal
import subprocess
import time

import pytest
from trainhelpers import train_command

from jaxadapt.errors import UserError
from jaxadapt import fs as jfs
from jaxadapt.train.rundir import Lease

BUCKET = "jaxadapt-test"


def losses(text: str) -> dict[int, float]:
    rows = [json.loads(line) for line in text.splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_a_run_lives_in_a_bucket(setup, gcs, tmp_path):
    fs, env = gcs
    root = setup
    fs.put(str(root / "model"), f"{BUCKET}/models/tiny", recursive=True)
    fs.put_file(str(root / "corpus.jsonl"), f"{BUCKET}/data/nl/corpus.jsonl")
    bucket = [f"runs_root=gs://{BUCKET}/runs", f"model.path=gs://{BUCKET}/models/tiny",
              f"data.sources.0.paths=[gs://{BUCKET}/data/nl/*.jsonl]", f"model.tokenizer=gs://{BUCKET}/models/tiny"]

    local = subprocess.run(train_command(root, "local", f"runs_root={tmp_path / 'runs'}"), capture_output=True,
                           text=True, env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    reference = losses((tmp_path / "runs" / "local" / "metrics.jsonl").read_text())
    assert sorted(reference) == list(range(1, 13))

    run = f"{BUCKET}/runs/bucket"
    env = {**env, "JAXADAPT_LEASE_SECONDS": "4"}
    proc = subprocess.Popen(train_command(root, "bucket", *bucket), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.time() + 300
    while not fs.exists(f"{run}/checkpoints/6/commit_success.txt"):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no checkpoint 6 in the bucket"
        time.sleep(0.1)
        fs.invalidate_cache()
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    again = subprocess.run(train_command(root, "bucket", *bucket), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed" in again.stderr and "taking it over" in again.stderr  # the killed trainer's lease expired
    fs.invalidate_cache()
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(run)}
    assert {"config.yaml", "metrics.jsonl", "checkpoints", "tensorboard"} <= names, names
    assert ".lock" not in names  # released at the end
    rows = [json.loads(line) for line in fs.cat(f"{run}/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13)), "each step logged once"
    assert losses(fs.cat(f"{run}/metrics.jsonl").decode()) == reference
    assert fs.ls(f"{run}/tensorboard"), "TensorBoard events in the bucket"

    for src, out in ((f"gs://{run}", f"gs://{BUCKET}/export"), (str(tmp_path / "runs" / "local"), tmp_path / "hf")):
        done = subprocess.run([*train_command(root, "x")[:3], "export", src, str(out)], capture_output=True,
                              text=True, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    fs.invalidate_cache()
    exported = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/export")}
    assert exported == {p.name for p in (tmp_path / "hf").iterdir()}
    for name in exported:
        assert fs.cat(f"{BUCKET}/export/{name}") == (tmp_path / "hf" / name).read_bytes(), name

    refused = subprocess.run([*train_command(root, "x")[:3], "export", f"gs://{run}", f"gs://{BUCKET}/export"],
                             capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "exists and is not empty" in refused.stderr


def test_a_bucket_run_dir_has_one_trainer_at_a_time(gcs, capsys):
    fs, _ = gcs
    run = f"gs://{BUCKET}/runs/leased"
    first = Lease(run, seconds=1.0)
    first.acquire()
    start = time.time()
    with pytest.raises(UserError, match=r"is in use by pid \d+ on .*wait for it to finish"):
        Lease(run, seconds=1.0).acquire()  # its lease was refreshed while this one watched
    assert time.time() - start < 1.0

    first._stop.set()  # the holder dies without releasing: its lease stops being refreshed
    first._thread.join()
    second = Lease(run, seconds=1.0)
    start = time.time()
    second.acquire()
    assert time.time() - start >= 0.5 and "taking it over" in capsys.readouterr().err
    held = json.loads(fs.cat(f"{BUCKET}/runs/leased/.lock"))
    assert time.time() - held["time"] < 0.5  # stamped when created, not when the wait began: not born expired
    first.release()  # too late: the lease is no longer its own, so it leaves it alone
    assert json.loads(fs.cat(f"{BUCKET}/runs/leased/.lock"))["token"] == second.record["token"]
    second.release()
    assert not fs.exists(f"{BUCKET}/runs/leased/.lock")


def test_two_trainers_taking_over_one_dead_lease_cannot_both_hold_it(gcs, capsys, monkeypatch):
    """Both read the expired lease; the second stalls before its delete while the first deletes it and creates its
    own. The second's delete names the version it read, so GCS refuses it instead of removing the first's fresh
    lease, and the second then finds a live holder and is refused."""
    fs, _ = gcs
    run = f"gs://{BUCKET}/runs/raced"
    lock = f"{run}/.lock"
    fs.pipe(lock.removeprefix("gs://"), json.dumps({"holder": "a preempted VM", "token": "dead", "beat": 3,
                                                    "time": time.time() - 60}).encode())
    text, dead = jfs.read_version(lock)
    assert json.loads(text)["token"] == "dead" and dead.isdigit()

    first, second = Lease(run, seconds=1.0), Lease(run, seconds=1.0)
    real = jfs.remove_version

    def stalled(path, version):  # the second trainer, between judging the lease expired and deleting it
        monkeypatch.setattr(jfs, "remove_version", real)
        first.acquire()
        assert not fs.exists(lock.removeprefix("gs://")) or json.loads(fs.cat(lock.removeprefix("gs://")))[
            "token"] == first.record["token"]
        return real(path, version)

    monkeypatch.setattr(jfs, "remove_version", stalled)
    with pytest.raises(UserError, match="is in use by pid"):
        second.acquire()
    assert capsys.readouterr().err.count("taking it over") == 1  # the first's; the second's delete was refused
    assert json.loads(fs.cat(lock.removeprefix("gs://")))["token"] == first.record["token"]
    assert not jfs.remove_version(lock, dead)
    first.release()
    assert jfs.read_version(lock) is None and not jfs.remove_version(lock, dead)


def test_a_holder_waking_from_a_long_stall_does_not_overwrite_its_successor(gcs, capsys):
    """The holder's refresh stops (a stall longer than the lease), a second trainer takes the expired lease over;
    the first one's next beat names the version it wrote last, so GCS refuses it and the successor's lease stays.
    A beat whose answer was lost (its version unknown here) but whose lease is still this trainer's goes on."""
    fs, _ = gcs
    run = f"gs://{BUCKET}/runs/stalled"
    lock = f"{BUCKET}/runs/stalled/.lock"
    first = Lease(run, seconds=1.0)
    first.acquire()
    first._stop.set()
    first._thread.join()
    assert first.beat() and json.loads(fs.cat(lock))["beat"] == first.record["beat"] > 0  # a beat by hand
    first.version = "1"  # as if the last rewrite landed but its answer (the new generation) was lost
    assert first.beat() and json.loads(fs.cat(lock))["token"] == first.record["token"]

    time.sleep(1.2)  # the stall: the lease expires
    second = Lease(run, seconds=1.0)
    second.acquire()
    assert not first.beat()  # wakes up: refused, and says so
    assert "this trainer's lease was taken over by pid" in capsys.readouterr().err
    assert json.loads(fs.cat(lock))["token"] == second.record["token"]
    first.release()  # leaves the successor's lease alone
    assert json.loads(fs.cat(lock))["token"] == second.record["token"]
    second.release()
    assert not fs.exists(lock)
