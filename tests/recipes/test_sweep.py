"""Sweeps: grid x zip expansion, run names, --dry-run and --emit (nothing is trained here)."""

from __future__ import annotations

import shlex

import pytest

from jaxadapt.cli import main
from jaxadapt.config.loader import read_yaml
from jaxadapt.errors import UserError
from jaxadapt.recipes.sweep import SweepSpec, expand, load_sweep, point_name

TRAIN = "name: cpt\nmodel: {path: smollm2-135m}\ntrain: {steps: 10, batch_size: 2, seq_len: 32}\n"


def test_grid_times_zip():
    spec = SweepSpec(grid={"lora.rank": [8, 16], "optim.learning_rate": [1e-4, 3e-4]},
                     zip={"train.steps": [10, 20], "optim.warmup_steps": [1, 2]})
    points = expand(spec, "s.yaml")
    assert len(points) == 8
    assert points[0] == [("lora.rank", 8), ("optim.learning_rate", 1e-4), ("train.steps", 10),
                         ("optim.warmup_steps", 1)]
    assert points[1][2:] == [("train.steps", 20), ("optim.warmup_steps", 2)]
    with pytest.raises(UserError, match="equal lengths"):
        expand(SweepSpec(zip={"a": [1, 2], "b": [1]}), "s.yaml")
    with pytest.raises(UserError, match="in both grid and zip"):
        expand(SweepSpec(grid={"a": [1]}, zip={"a": [2]}), "s.yaml")


def test_point_names_are_readable_and_safe():
    assert point_name([("lora.rank", 8), ("optim.learning_rate", 3e-4)]) == "lora.rank=8,optim.learning_rate=0.0003"
    assert point_name([("stages.cpt.config.lora.rank", 8)]) == "cpt.lora.rank=8"
    assert point_name([("model.path", "a/b c"), ("x", True)]) == "model.path=a_b_c,x=true"
    long = point_name([("data.path", "x" * 300)])
    assert len(long) == 100 and "/" not in long


@pytest.fixture
def train_sweep(tmp_path):
    (tmp_path / "cpt.yaml").write_text(TRAIN)
    path = tmp_path / "sweep.yaml"
    path.write_text("base: cpt.yaml\ngrid: {lora.rank: [8, 16]}\nzip: {optim.learning_rate: [1e-4, 3e-4], "
                    "train.trainable: [lora, lora+embeddings]}\n")
    return path


def test_dry_run_prints_points_and_commands(train_sweep, capsys):
    assert main(["sweep", str(train_sweep), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cpt/lora.rank=8,optim.learning_rate=0.0001,train.trainable=lora"
    cmd = shlex.split(lines[1])
    assert cmd[:3] == ["jaxadapt", "train", str(train_sweep.parent / "cpt.yaml")]
    assert cmd[3:] == ["lora.rank=8", "optim.learning_rate=0.0001", "train.trainable=lora",
                       "name=cpt/lora.rank=8,optim.learning_rate=0.0001,train.trainable=lora"]
    assert len(lines) == 8


def test_emit_writes_resolved_configs_and_launch_txt(train_sweep, tmp_path):
    emit = tmp_path / "emit"
    assert main(["sweep", str(train_sweep), "--emit", str(emit)]) == 0
    launch = (emit / "launch.txt").read_text().splitlines()
    assert len(launch) == 4
    cmd = shlex.split(launch[3])
    assert cmd[:2] == ["jaxadapt", "train"]
    cfg = read_yaml(cmd[2])
    assert cfg["name"] == "cpt/lora.rank=16,optim.learning_rate=0.0003,train.trainable=lora+embeddings"
    assert cfg["lora"]["rank"] == 16 and cfg["optim"]["learning_rate"] == 3e-4 and cfg["train"]["steps"] == 10


def test_recipe_base_and_bad_points_fail_before_running(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "name: rec\nstages:\n  - {name: tok, kind: tokenizer_train, config: {corpus: [c.txt], vocab_size: 300}}\n")
    (tmp_path / "s.yaml").write_text("base: r.yaml\ngrid: {stages.tok.config.vocab_size: [300, 500]}\n")
    base, is_recipe, points = load_sweep(tmp_path / "s.yaml")
    assert is_recipe and [p.name for p in points] == ["rec/tok.vocab_size=300", "rec/tok.vocab_size=500"]
    assert points[1].config.stages[0].config["vocab_size"] == 500
    assert points[1].config.stages[0].config["out"] == "runs/rec/tok.vocab_size=500/stages/tok/out"
    (tmp_path / "s.yaml").write_text("base: r.yaml\ngrid: {stages.tok.config.vocab_sise: [300]}\n")
    with pytest.raises(UserError, match="sweep point rec/tok.vocab_sise=300: .*did you mean vocab_size"):
        load_sweep(tmp_path / "s.yaml")
    (tmp_path / "cpt.yaml").write_text(TRAIN)
    (tmp_path / "s.yaml").write_text("base: cpt.yaml\ngrid: {lora.rnk: [8]}\n")
    with pytest.raises(UserError, match=r"lora.rnk: unknown key \(did you mean lora.rank\?\)"):
        load_sweep(tmp_path / "s.yaml")
