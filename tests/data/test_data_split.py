"""`jaxadapt data split`: training and held-out files by the trainer's document hash, written as one dir."""

from __future__ import annotations

import json

from datahelpers import write_jsonl

from jaxadapt.cli import main
from jaxadapt.data.documents import held_out

DOCS = [f"document {i}: " + "de kat zit op de mat " * (i % 5 + 1) for i in range(400)]


def _texts(path):
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_split_is_the_trainers_validation_split(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in DOCS])
    assert main(["data", "split", str(src), "--out", str(tmp_path / "s"), "--heldout-fraction", "0.05"]) == 0
    train, held = _texts(tmp_path / "s/train.jsonl"), _texts(tmp_path / "s/heldout.jsonl")
    assert sorted(train + held) == sorted(DOCS)
    assert 5 < len(held) < 40 and all(held_out(t, 0.05) for t in held)
    assert not any(held_out(t, 0.05) for t in train)
    meta = json.loads((tmp_path / "s/split.json").read_text())
    assert (meta["train_docs"], meta["heldout_docs"]) == (len(train), len(held))


def test_max_heldout_drops_the_rest_of_the_split(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in DOCS])
    assert main(["data", "split", str(src), "--out", str(tmp_path / "s"), "--heldout-fraction", "0.05",
                 "--max-heldout", "3"]) == 0
    train, held = _texts(tmp_path / "s/train.jsonl"), _texts(tmp_path / "s/heldout.jsonl")
    assert len(held) == 3 and not any(held_out(t, 0.05) for t in train)  # never trained on either


def test_bad_input_names_it_and_writes_nothing(tmp_path, capsys):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in DOCS[:3]])
    out = tmp_path / "s"
    assert main(["data", "split", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["data", "split", str(src), "--out", str(out), "--heldout-fraction", "1.5"]) == 2
    assert "--heldout-fraction=1.5" in capsys.readouterr().err
    assert main(["data", "split", str(src), "--out", str(out), "--heldout-fraction", "1e-9"]) == 2
    assert "no document falls in the held-out split" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".s.tmp-*"))
