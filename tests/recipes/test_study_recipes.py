"""The study recipes in configs/recipes/: every one loads and plans (references, stage options, train configs)
exactly as `jaxadapt run --dry-run` does, so a renamed CLI option or config key breaks here. Nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from jaxadapt.errors import UserError
from jaxadapt.recipes import runner
from jaxadapt.recipes.plan import plan
from jaxadapt.recipes.schema import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs" / "recipes").glob("*.yaml"))
STUDIES = {"chocollama-lora", "chocollama-tokentrans", "lep-extended", "lep-replace", "tejaswi-extend",
           "beyond-english"}


def test_every_study_has_a_recipe():
    assert STUDIES <= {p.stem for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_plans(path, tmp_path, monkeypatch, capsys):
    recipe = load_recipe(path, [f"runs_root={tmp_path / 'runs'}"])
    assert recipe.name == path.stem
    stages = plan(recipe, path)
    assert [s.name for s in stages] == [s.name for s in recipe.stages]
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("a dry run must not run a stage"))
    runner.run_recipe(recipe, path, dry_run=True)
    assert capsys.readouterr().out.count("would run: jaxadapt") == len(stages)
    assert not (tmp_path / "runs").exists()


def test_beyond_english_without_vocab_extension():
    path = next(p for p in RECIPES if p.stem == "beyond-english")
    recipe = load_recipe(path, ["stages.adapt.config.tokenizer=${vars.base_model}"])
    adapt = {s.name: s for s in plan(recipe, path)}["adapt"]
    assert adapt.config["tokenizer"] == recipe.vars["base_model"]


def test_lep_mistral_overrides():
    path = next(p for p in RECIPES if p.stem == "lep-extended")
    recipe = load_recipe(path, ["vars.base_model=models/Mistral-7B-v0.1", "vars.add=23328", "vars.lr=1e-4"])
    stages = {s.name: s for s in plan(recipe, path)}
    assert stages["tok"].config["add"] == 23328
    assert stages["embed"].config["optim"]["learning_rate"] == 1e-4


def test_calibrate_stage_passes_train_overrides():
    path = next(p for p in RECIPES if p.stem == "lep-extended")
    stages = {s.name: s for s in plan(load_recipe(path, ["vars.calibration_steps=7"]), path)}
    assert stages["calibrate"].config["overrides"][-6:] == [
        "train.steps=7", "train.batch_size=8", "train.seq_len=1024", "model.compute_dtype=bfloat16", "mesh.data=1",
        "mesh.fsdp=-1"]
    bad = load_recipe(path, ["stages.calibrate.config.overrides=[train.steps]"])
    with pytest.raises(UserError, match=r"overrides: override 'train.steps': expected key.path=value in .*calibrate"):
        plan(bad, path)
    bad = load_recipe(path, ["stages.calibrate.config.overrides=[7]"])
    with pytest.raises(UserError, match=r"overrides\[0\]: expected str, got 7 \(int\).* in .*stages.calibrate.config"):
        plan(bad, path)


def test_chocollama_tokentrans_builds_its_mapping():
    """replace -> trans-tokenize (parallel text -> `vocab map`) -> mapping init -> embeddings -> LoRA."""
    path = next(p for p in RECIPES if p.stem == "chocollama-tokentrans")
    stages = {s.name: s for s in plan(load_recipe(path), path)}
    assert list(stages)[:6] == ["parallel", "tok", "map", "adapt", "embed", "embed_export"]
    par = stages["parallel"].out
    assert stages["map"].config["parallel"] == [f"{par}/debian-en-nl.en.jsonl", f"{par}/debian-en-nl.nl.jsonl"]
    assert stages["map"].out.endswith("stages/map/map.json")
    assert stages["adapt"].config["init"] == f"mapping:{stages['map'].out}"
    assert stages["embed"].config["train"]["trainable"] == "embeddings"
    assert stages["cpt"].config["model"]["path"] == stages["embed_export"].out
    assert stages["cpt"].config["train"]["trainable"] == "lora+embeddings"
    bad = load_recipe(path, ["stages.map.config.parallel=en.jsonl"])
    with pytest.raises(UserError, match=r"^parallel: expected a list \(tuple\[str, str\]\), got 'en.jsonl' \(str\) "
                                        r"in .*stages.map.config"):
        plan(bad, path)
