"""Recipes: validation before anything runs, skip-by-hash, resume after a crash, and one real stage end to end."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from jaxadapt.cli import main
from jaxadapt.errors import Stopped, UserError
from jaxadapt.recipes import runner
from jaxadapt.recipes.schema import load_recipe

RECIPE = """\
name: demo
runs_root: {root}
vars: {{corpus: {corpus}, size: 300}}
stages:
  - name: tok
    kind: tokenizer_train
    config: {{corpus: ["${{vars.corpus}}"], vocab_size: "${{vars.size}}"}}
  - name: ext
    kind: tokenizer_extend
    config: {{base: "${{stages.tok.out}}", corpus: ["${{vars.corpus}}"], add: 1}}
  - name: adapt
    kind: vocab_adapt
    config: {{model: /models/base, tokenizer: "${{stages.ext.out}}"}}
"""


@pytest.fixture
def recipe(tmp_path):
    corpus = tmp_path / "c.txt"
    words = ["huis", "boom", "water", "fiets", "kaas", "straat", "regen", "zon"]
    corpus.write_text("\n".join(" ".join(words[(i * 7 + j) % 8] for j in range(10)) for i in range(150)))
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(root=tmp_path / "runs", corpus=corpus))
    return path


@pytest.fixture
def fake(monkeypatch):
    """Replace the child process: record the commands, write each stage's --out, fail where asked."""
    calls, fail = [], {}

    def execute(args, log, alone=False):
        calls.append(args[:2] if args[0] != "train" else args[:1])
        if tuple(args[:2]) in fail:
            return fail[tuple(args[:2])]
        Path(args[args.index("--out") + 1]).mkdir(parents=True)
        return 0, None

    monkeypatch.setattr(runner, "execute", execute)
    return calls, fail


def run(path, *overrides):
    return runner.run_recipe(load_recipe(path, overrides), path)


def test_validation_errors_name_the_problem(recipe):
    text = recipe.read_text()
    cases = {
        "kind: tokenizer_train": ("kind: tokeniser_train", "unknown stage kind (did you mean 'tokenizer_train'?)"),
        '"${stages.tok.out}"': ('"${stages.tk.out}"', "no stage 'tk' before this one (did you mean 'tok'?)"),
        '"${vars.corpus}"], add': ('"${vars.corpsu}"], add', "vars has no 'corpsu' (did you mean 'corpus'?)"),
        "    kind: vocab_adapt": ("    knd: vocab_adapt", "stages[2].knd: unknown key (did you mean stages[2].kind?)"),
        "add: 1": ("ad: 1", "stages.ext.config.ad: unknown option of `jaxadapt tokenizer extend` (did you mean add?)"),
    }
    for old, (new, message) in cases.items():
        recipe.write_text(text.replace(old, new, 1))
        with pytest.raises(UserError) as e:
            run(recipe)
        assert message in str(e.value), (new, str(e.value))
    recipe.write_text(text)
    with pytest.raises(UserError, match=r"no stage named 'ex' \(did you mean 'ext'\?\)"):
        run(recipe, "stages.ex.config.add=2")
    with pytest.raises(UserError, match="Invalid value for '--add'"):  # click's own check, before any stage ran
        run(recipe, "stages.ext.config.add=many")


def test_skip_by_hash_and_rerun_from_the_changed_stage(recipe, fake):
    calls, _ = fake
    root = run(recipe)
    assert calls == [["tokenizer", "train"], ["tokenizer", "extend"], ["vocab", "adapt"]]
    record = json.loads((root / "stages/ext/stage.json").read_text())
    assert record["status"] == "complete" and record["outputs"]["out"].endswith("stages/ext/out")
    assert "${" not in (root / "recipe.yaml").read_text()
    calls.clear()
    run(recipe)
    assert calls == []  # everything done with the same configs
    run(recipe, "stages.ext.config.add=2")
    assert calls == [["tokenizer", "extend"], ["vocab", "adapt"]]  # the changed stage and every later one


def test_resume_after_a_crash(recipe, fake):
    calls, fail = fake
    fail[("vocab", "adapt")] = (1, None)
    with pytest.raises(UserError, match="stage adapt .* exited with code 1"):
        run(recipe)
    root = recipe.parent / "runs/demo"
    assert json.loads((root / "stages/adapt/stage.json").read_text())["status"] == "failed"
    calls.clear()
    fail.clear()
    run(recipe)
    assert calls == [["vocab", "adapt"]]


@pytest.mark.parametrize("outcome, code", [((75, None), 75), ((75, "SIGTERM"), 75), ((130, "SIGINT"), 130)])
def test_a_stopped_stage_stops_the_recipe_with_trains_status(recipe, fake, outcome, code):
    """A stage that exits as a preempted train does (75; or the runner itself got the signal) is recorded as
    stopped and the runner exits with the same status, so babysit.sh / SLURM requeue it; the rerun continues it."""
    calls, fail = fake
    fail[("vocab", "adapt")] = outcome
    with pytest.raises(Stopped) as e:
        run(recipe)
    assert e.value.code == code
    root = recipe.parent / "runs/demo"
    assert json.loads((root / "stages/adapt/stage.json").read_text())["status"] == "stopped"
    calls.clear()
    fail.clear()
    run(recipe)
    assert calls == [["vocab", "adapt"]]


def test_dry_run_lists_without_running(recipe, fake, capsys):
    calls, _ = fake
    assert main(["run", str(recipe), "--dry-run", "stages.ext.config.add=3"]) == 0
    out = capsys.readouterr().out
    assert "[ext] would run: jaxadapt tokenizer extend --base" in out and "--add 3" in out
    assert calls == [] and not (recipe.parent / "runs").exists()


def test_real_stage_runs_as_a_child_process(recipe):
    """One real dispatch: `jaxadapt tokenizer train` in a subprocess, then skipped on the second run."""
    path = recipe.parent / "one.yaml"
    path.write_text(textwrap.dedent(recipe.read_text().split("  - name: ext")[0]))
    root = run(path)
    assert json.loads((root / "stages/tok/out/tokenizer.json").read_text())["model"]["type"] == "BPE"
    assert "wrote" in (root / "stages/tok/log.txt").read_text()
    first = json.loads((root / "stages/tok/stage.json").read_text())["run_id"]
    run(path)
    assert json.loads((root / "stages/tok/stage.json").read_text())["run_id"] == first
