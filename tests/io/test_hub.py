"""Hub model ids (`org/name`) wherever a command takes a model, against a real hub-cache layout built in tmp_path.

`jaxadapt.io.hf.resolve` reaches the hub only through `huggingface_hub.snapshot_download`; offline (conftest sets
HF_HUB_OFFLINE) it answers from the cache (tests/hubcache.py). Each command is run twice through the real CLI, once
with the hub id and once with the snapshot's local path, and the results must be the same bits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from hubcache import add_snapshot, offline
from tinymodels import build_tiny_lm

from jaxadapt.cli import main

HUB_ID = "tiny-org/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """(hub cache dir, snapshot dir, corpora dir): the tiny Llama as the hub client caches `tiny-org/tiny-llama`."""
    root = tmp_path_factory.mktemp("hub")
    model = build_tiny_lm(root, docs_per_lang=30)
    files = {f.name: f.read_bytes() for f in sorted(model.iterdir())}
    snapshot = add_snapshot(root / "cache", "model", HUB_ID, COMMIT, files)
    shutil.rmtree(model)  # only the cache holds the model now
    return root / "cache", snapshot, root


@pytest.fixture(autouse=True)
def offline_hub(hub, monkeypatch):
    """Point huggingface_hub at the fixture's cache, offline; fail the test if anything opens a connection."""
    yield from offline(hub[0], monkeypatch)


def ok(argv: list[str], capsys) -> str:
    """Run the CLI, assert exit 0, return stdout."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, f"{argv[:2]} exited {code}: {err[-2000:]}"
    return out


def same_files(a: Path, b: Path, names) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_the_hub_id_resolves_to_the_snapshot(hub):
    from jaxadapt.io.hf import resolve

    assert resolve(HUB_ID) == hub[1]


def test_convert(hub, tmp_path, capsys):
    for src, out in ((HUB_ID, tmp_path / "a"), (hub[1], tmp_path / "b")):
        ok(["convert", src, out], capsys)
    names = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == names
    same_files(tmp_path / "a", tmp_path / "b", names)


def test_eval_predict_generate(hub, tmp_path, capsys):
    corpus = hub[2] / "nl.jsonl"
    ok(["eval", HUB_ID, "--target", f"nl={corpus}", "--base", hub[1], "--max-bytes", "2000", "--seq-len", "64",
        "--json", tmp_path / "r.json"], capsys)
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["bpb"]["nl"]["bpb"] == res["base"]["bpb"]["nl"]["bpb"] > 0
    assert res["retention"]["flagged"] == []
    for cmd in (["predict", "--text", "de kaas"], ["generate", "--prompt", "de kaas", "--max-new-tokens", "4"],
                ["generate", "--prompt", "hallo", "--chat", "--max-new-tokens", "4"]):
        by_id, by_path = (ok([cmd[0], spec, *cmd[1:]], capsys) for spec in (HUB_ID, hub[1]))
        assert by_id == by_path and by_id.strip()


def test_tokenizer_extend_vocab_adapt_propagate(hub, tmp_path, capsys):
    corpus = hub[2] / "nl.jsonl"
    for name, spec in (("id", HUB_ID), ("path", hub[1])):
        ok(["tokenizer", "extend", "--base", spec, "--corpus", corpus, "--add", "20", "--out", tmp_path / name / "tok"],
           capsys)
        ok(["vocab", "adapt", "--model", spec, "--tokenizer", tmp_path / name / "tok", "--init", "mean",
            "--out", tmp_path / name / "adapted"], capsys)
        ok(["propagate", "--base", spec, "--donor", tmp_path / name / "adapted", "--target", spec,
            "--method", "conversion", "--out", tmp_path / name / "prop"], capsys)
    a, b = tmp_path / "id", tmp_path / "path"
    assert json.loads((a / "tok" / "jaxadapt_tokenizer.json").read_text())["base"] == HUB_ID
    same_files(a / "tok", b / "tok", ["tokenizer.json", "tokenizer_config.json"])
    same_files(a / "adapted", b / "adapted", ["model.safetensors", "config.json", "tokenizer.json"])
    same_files(a / "prop", b / "prop", ["model.safetensors", "config.json", "tokenizer.json"])
    assert json.loads((a / "adapted" / "adaptation.json").read_text())["new_vocab_size"] > json.loads(
        (a / "adapted" / "adaptation.json").read_text())["old_vocab_size"]


def test_train_export_generate(hub, tmp_path, capsys):
    """A 2-step LoRA run on the hub id (its tokenizer from the snapshot) has the losses of the run on the snapshot
    path; its run dir, with the hub id in config.yaml, exports and generates, and stands on the snapshot."""
    from jaxadapt.modelref import model_home

    runs = {}
    for name, spec in (("id", HUB_ID), ("path", str(hub[1]))):
        cfg = {"name": name, "runs_root": str(tmp_path / "runs"), "model": {"path": spec},
               "train": {"trainable": "lora", "steps": 2, "batch_size": 8, "seq_len": 32, "log_every": 1},
               "checkpoint": {"every": 2}, "logging": {"tensorboard": False, "cpu_peak_flops": 1e11},
               "data": {"sources": [{"name": "nl", "paths": [str(hub[2] / "nl.jsonl")]}], "validation_fraction": 0,
                        "prefetch": 0}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        ok(["train", tmp_path / f"{name}.yaml"], capsys)
        runs[name] = tmp_path / "runs" / name
    losses = {name: [(r["step"], r["loss"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
                     if "loss" in r] for name, d in runs.items()}
    assert len(losses["id"]) == 2 and losses["id"] == losses["path"]
    assert yaml.safe_load((runs["id"] / "config.yaml").read_text())["model"]["path"] == HUB_ID
    assert model_home(str(runs["id"])) == hub[1]  # where generation_config.json and adaptation.json are read
    ok(["export", runs["id"], tmp_path / "export"], capsys)
    same_files(tmp_path / "export", hub[1], ["tokenizer.json"])
    assert ok(["generate", runs["id"], "--prompt", "de kaas", "--max-new-tokens", "4"], capsys).strip()


def test_plan_reads_only_the_config(hub, capsys):
    """`plan` of a hub id fetches config.json alone (a plan needs no weights) and plans what the snapshot plans."""
    args = ["--mesh", "data=1", "--batch", "2", "--seq", "32"]
    assert ok(["plan", HUB_ID, *args], capsys).replace(HUB_ID, "M") == ok(["plan", hub[1], *args], capsys).replace(
        str(hub[1]), "M")


def test_old_rows_of_an_adapted_hub_model(hub, tmp_path):
    """train.trainable=new_rows on a hub id reads old_vocab_size from the adaptation.json in its snapshot."""
    from jaxadapt.config.loader import load_config
    from jaxadapt.train.config import RunConfig
    from jaxadapt.train.partition import resolve_old_vocab

    repo = hub[0] / "models--tiny-org--tiny-llama-nl"
    shutil.copytree(hub[1].parents[1], repo, symlinks=True)
    (repo / "snapshots" / COMMIT / "adaptation.json").write_text(json.dumps({"old_vocab_size": 7,
                                                                             "prefix_preserved": True}))
    cfg = load_config(RunConfig, None, ["model.path=tiny-org/tiny-llama-nl", "train.trainable=new_rows"])
    assert resolve_old_vocab(cfg) == 7


@pytest.mark.parametrize("argv", [
    ["convert", "nobody/none", "out"],
    ["eval", "nobody/none", "--bpb", "nl=NL"],
    ["generate", "nobody/none", "--prompt", "hoi"],
    ["predict", "nobody/none"],
    ["tokenizer", "extend", "--base", "nobody/none", "--corpus", "NL", "--add", "5", "--out", "tok"],
    ["vocab", "adapt", "--model", "nobody/none", "--tokenizer", "SNAPSHOT", "--out", "adapted"],
    ["propagate", "--base", "nobody/none", "--donor", "SNAPSHOT", "--target", "SNAPSHOT", "--out", "prop"],
    ["train", "RUN", "model.path=nobody/none"],
    ["plan", "nobody/none"],
], ids=lambda a: " ".join(a[:2]))
def test_an_unknown_hub_id_is_one_line_naming_it(argv, hub, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = {"name": "r", "model": {"path": HUB_ID}, "train": {"steps": 1, "batch_size": 8, "seq_len": 32},
           "data": {"sources": [{"name": "nl", "paths": [str(hub[2] / "nl.jsonl")]}]}}
    Path("run.yaml").write_text(yaml.safe_dump(run))
    subst = {"NL": str(hub[2] / "nl.jsonl"), "SNAPSHOT": str(hub[1]), "RUN": "run.yaml"}
    argv = [subst.get(a, a).replace("=NL", f"={subst['NL']}") for a in argv]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "'nobody/none'" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"], "a failed command wrote something"
