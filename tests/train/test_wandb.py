"""logging.wandb_project with wandb's offline mode: a real wandb run file is written (what `wandb sync` uploads),
holding each logged step's metrics and the run's config (no account, no network)."""

import json
import os
import struct
import subprocess

import pytest
from trainhelpers import logged_losses, train_command


def wandb_records(path):
    """The protobuf records of a .wandb file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose chunks are
    (crc32, length, type) + payload; types FULL=1 and LAST=4 end a record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, chunk = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = chunk + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


def items(entries) -> dict:
    return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}


def test_wandb_offline_records_the_run(setup, tmp_path):
    pytest.importorskip("wandb")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    done = subprocess.run(train_command(setup, "wandb", "train.steps=3", f"runs_root={tmp_path / 'runs'}",
                                        "logging.wandb_project=jaxadapt-test"), capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, list((tmp_path / "wandb").rglob("*"))
    records = list(wandb_records(files[0]))
    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert {h["_step"]: h["loss"] for h in history} == logged_losses(tmp_path / "runs" / "wandb")
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert [r.project for r in runs] == ["jaxadapt-test"]
    config = items(runs[0].config.update)
    assert config["train"]["steps"] == 3 and config["logging"]["wandb_project"] == "jaxadapt-test"
