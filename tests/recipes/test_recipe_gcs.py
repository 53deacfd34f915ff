"""A recipe read from a `gs://` bucket whose runs_root is in the bucket (a GCS emulator on localhost): stage dirs,
records, logs and outputs land there, stage outputs feed later stages by URL, and a re-run skips what is done."""

from __future__ import annotations

import json
import random

import pytest

from jaxadapt.cli import main
from jaxadapt.recipes import runner
from jaxadapt.recipes.plan import plan, run_dir, stage_dir
from jaxadapt.recipes.schema import load_recipe

BUCKET = "jaxadapt-recipes"
RECIPE = """\
name: demo
runs_root: gs://{bucket}/runs
vars: {{corpus: "gs://{bucket}/data/nl.jsonl"}}
stages:
  - name: tok
    kind: tokenizer_train
    config: {{corpus: ["${{vars.corpus}}"], vocab_size: 300}}
  - name: stats
    kind: tokenizer_stats
    config: {{tokenizer: ["${{stages.tok.out}}"], corpus: ["${{vars.corpus}}"]}}
"""


@pytest.fixture
def recipe(gcs):
    fs, _ = gcs
    rng = random.Random(0)
    words = ["".join(rng.choices(["ka", "boe", "ren", "fiet", "zon", "wa", "ter", "lijk"], k=3)) for _ in range(200)]
    fs.pipe(f"{BUCKET}/data/nl.jsonl", "".join(json.dumps({"text": " ".join(rng.choices(words, k=12))}) + "\n"
                                                for _ in range(200)).encode())
    fs.pipe(f"{BUCKET}/recipes/demo.yaml", RECIPE.format(bucket=BUCKET).encode())
    return f"gs://{BUCKET}/recipes/demo.yaml"


def test_stage_dirs_of_a_bucket_root_stay_urls(recipe):
    r = load_recipe(recipe)
    assert str(run_dir(r)) == f"gs://{BUCKET}/runs/demo"
    assert str(stage_dir(r, "tok")) == f"gs://{BUCKET}/runs/demo/stages/tok"
    tok, stats = plan(r, recipe)
    assert tok.out == f"gs://{BUCKET}/runs/demo/stages/tok/out"
    assert tok.call["config"]["out"] == tok.out and stats.config["tokenizer"] == [tok.out]
    assert stats.out == f"gs://{BUCKET}/runs/demo/stages/stats/stats.json"


def test_a_recipe_runs_in_a_bucket(gcs, recipe, tmp_path, monkeypatch, capsys):
    fs, _ = gcs
    monkeypatch.chdir(tmp_path)
    assert main(["run", recipe]) == 0
    root = f"{BUCKET}/runs/demo"
    fs.invalidate_cache()
    assert {p.rsplit("/", 1)[-1] for p in fs.ls(root)} == {"recipe.yaml", "stages"}
    records = {s: json.loads(fs.cat(f"{root}/stages/{s}/stage.json")) for s in ("tok", "stats")}
    assert all(r["status"] == "complete" for r in records.values())
    assert records["stats"]["upstream"] == records["tok"]["run_id"]
    assert json.loads(fs.cat(f"{root}/stages/tok/out/tokenizer.json"))["model"]["type"] == "BPE"
    stats = json.loads(fs.cat(f"{root}/stages/stats/stats.json"))
    assert stats[0]["tokenizer"] == f"gs://{root}/stages/tok/out" and stats[0]["tokens"] > 0
    assert "wrote gs://" in fs.cat(f"{root}/stages/tok/log.txt").decode()
    assert "${" not in fs.cat(f"{root}/recipe.yaml").decode()

    capsys.readouterr()
    runner.run_recipe(load_recipe(recipe), recipe)  # everything done: skipped, nothing rewritten
    assert capsys.readouterr().out.count(": skipped") == 2
    fs.invalidate_cache()
    assert json.loads(fs.cat(f"{root}/stages/stats/stage.json"))["run_id"] == records["stats"]["run_id"]
    assert list(tmp_path.iterdir()) == [], "nothing local (no gs: dir)"


def test_a_sweep_read_from_and_emitted_to_a_bucket(gcs, recipe, tmp_path, monkeypatch):
    """The sweep file and its base recipe in the bucket (`base:` beside it, `..` resolved), --emit into the bucket."""
    fs, _ = gcs
    fs.pipe(f"{BUCKET}/sweeps/size.yaml",
            b"base: ../recipes/demo.yaml\ngrid: {stages.tok.config.vocab_size: [280, 290]}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", f"gs://{BUCKET}/sweeps/size.yaml", "--emit", f"gs://{BUCKET}/emit"]) == 0
    fs.invalidate_cache()
    launch = fs.cat(f"{BUCKET}/emit/launch.txt").decode().splitlines()
    assert launch == [f"jaxadapt run gs://{BUCKET}/emit/tok.vocab_size={n}.yaml" for n in (280, 290)]
    emitted = load_recipe(f"gs://{BUCKET}/emit/tok.vocab_size=290.yaml")
    assert emitted.stages[0].config["vocab_size"] == 290 and emitted.runs_root == f"gs://{BUCKET}/runs"
    assert list(tmp_path.iterdir()) == []
