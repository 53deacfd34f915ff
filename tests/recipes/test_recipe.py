"""Recipes: validation before anything runs, skip-by-hash, resume after a crash, and real stages end to end."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from jaxadapt.cli import app, main
from jaxadapt.errors import Stopped, UserError
from jaxadapt.recipes import runner
from jaxadapt.recipes.kinds import KINDS, check
from jaxadapt.recipes.plan import plan
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
    """Replace the child process: record the stage kinds, write each stage's out, fail where asked."""
    calls, fail = [], {}

    def execute(call, log, alone=False):
        calls.append(call["kind"])
        if call["kind"] in fail:
            return fail[call["kind"]]
        Path(call["config"]["out"]).mkdir(parents=True)
        return 0, None, None

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
        "add: 1": ("ad: 1", f"ad: unknown key (did you mean add?) in {recipe} (stages.ext.config, for `jaxadapt "
                            "tokenizer extend`)"),
        "vocab_size: ": ("vocab_sise: ", f"vocab_sise: unknown key (did you mean vocab_size?) in {recipe} (stages.tok"),
        "/models/base": ("[/models/base]", "model: expected str, got ['/models/base'] (list)"),
    }
    for old, (new, message) in cases.items():
        recipe.write_text(text.replace(old, new, 1))
        with pytest.raises(UserError) as e:
            run(recipe)
        assert message in str(e.value), (new, str(e.value))
    recipe.write_text(text)
    with pytest.raises(UserError, match=r"'ex' is neither an index into it nor the name of an item \(did you mean "
                                        r"'ext'\?\)"):
        run(recipe, "stages.ex.config.add=2")
    with pytest.raises(UserError, match=r"^add: expected int, got 'many' \(str\) in .*r.yaml \(stages.ext.config, "
                                        r"for `jaxadapt tokenizer extend`\)$"):
        run(recipe, "stages.ext.config.add=many")  # the entry point's signature is the schema, checked before any stage
    with pytest.raises(UserError, match=r"^base: required key is missing \(str, no default\) in .*\(stages.ext"):
        run(recipe, 'stages.ext.config={corpus: [c.txt], add: 1}')


def test_skip_by_hash_and_rerun_from_the_changed_stage(recipe, fake):
    calls, _ = fake
    root = run(recipe)
    assert calls == ["tokenizer_train", "tokenizer_extend", "vocab_adapt"]
    record = json.loads((root / "stages/ext/stage.json").read_text())
    assert record["status"] == "complete" and record["outputs"]["out"].endswith("stages/ext/out")
    assert "${" not in (root / "recipe.yaml").read_text()
    calls.clear()
    run(recipe)
    assert calls == []  # everything done with the same configs
    run(recipe, "stages.ext.config.add=2")
    assert calls == ["tokenizer_extend", "vocab_adapt"]  # the changed stage and every later one


def test_resume_after_a_crash(recipe, fake):
    calls, fail = fake
    fail["vocab_adapt"] = (1, None, None)
    with pytest.raises(UserError, match="stage adapt .* exited with code 1"):
        run(recipe)
    root = recipe.parent / "runs/demo"
    assert json.loads((root / "stages/adapt/stage.json").read_text())["status"] == "failed"
    calls.clear()
    fail.clear()
    run(recipe)
    assert calls == ["vocab_adapt"]


@pytest.mark.parametrize("outcome, code", [((75, None, None), 75), ((75, "SIGTERM", None), 75),
                                           ((130, "SIGINT", None), 130)])
def test_a_stopped_stage_stops_the_recipe_with_trains_status(recipe, fake, outcome, code):
    """A stage that exits as a preempted train does (75; or the runner itself got the signal) is recorded as
    stopped and the runner exits with the same status, so babysit.sh / SLURM requeue it; the rerun continues it."""
    calls, fail = fake
    fail["vocab_adapt"] = outcome
    with pytest.raises(Stopped) as e:
        run(recipe)
    assert e.value.code == code
    root = recipe.parent / "runs/demo"
    assert json.loads((root / "stages/adapt/stage.json").read_text())["status"] == "stopped"
    calls.clear()
    fail.clear()
    run(recipe)
    assert calls == ["vocab_adapt"]


def test_dry_run_lists_without_running(recipe, fake, capsys):
    calls, _ = fake
    assert main(["run", str(recipe), "--dry-run", "stages.ext.config.add=3"]) == 0
    out = capsys.readouterr().out
    assert "[ext] would run: jaxadapt tokenizer extend with base=" in out and "add=3" in out
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


def test_stage_config_overrides_step_into_lists_as_train_overrides_do(recipe):
    """One override walk (the loader's) for recipes and train configs: a stage by its name, a list inside its config
    by index, and a bad one refused the same way."""
    stages = load_recipe(recipe, ["stages.ext.config.corpus.0=other.txt", "stages.1.config.add=2"]).stages
    assert stages[1].config["corpus"] == ["other.txt"] and stages[1].config["add"] == 2
    with pytest.raises(UserError, match=r"^override 'stages.ext.config.corpus.3=x': stages.ext.config.corpus is a "
                                        r"list of 1; '3' is neither an index"):
        load_recipe(recipe, ["stages.ext.config.corpus.3=x"])
    with pytest.raises(UserError, match=r"^stages\[1\].out: unknown key \(valid keys: name, kind, config\) in "
                                        r"override$"):
        load_recipe(recipe, ["stages.ext.out=x"])


def test_a_single_value_for_a_repeatable_option_is_a_list_of_one(recipe):
    recipe.write_text(recipe.read_text().replace('corpus: ["${vars.corpus}"], add', 'corpus: "${vars.corpus}", add'))
    ext = plan(load_recipe(recipe), recipe)[1]
    assert isinstance(ext.config["corpus"], str)
    assert check(ext.kind, ext.config, str(recipe))["corpus"] == [ext.config["corpus"]]


def test_every_kind_calls_the_function_its_command_runs():
    """A stage calls the very function `jaxadapt COMMAND` is mounted with, so the two cannot drift apart."""
    mounted = _commands(app)
    for kind, k in KINDS.items():
        if kind != "train":
            assert mounted[k.command] is k.entry, kind
    assert set(KINDS) - {"train"} == {kind for kind, k in KINDS.items() if k.command in mounted and k.entry}


def _commands(typer_app, prefix=()) -> dict:
    out = {(*prefix, c.name or c.callback.__name__.replace("_", "-")): c.callback
           for c in typer_app.registered_commands}
    for group in typer_app.registered_groups:
        out |= _commands(group.typer_instance, (*prefix, group.name))
    return out


def test_a_stage_fails_with_its_commands_user_error(recipe):
    """Bad input that only the command can see (a corpus that is not there) fails in the stage's process and is
    raised by the runner as the same UserError, recorded with the stage."""
    path = recipe.parent / "one.yaml"
    path.write_text(textwrap.dedent(recipe.read_text().split("  - name: ext")[0]).replace(
        '["${vars.corpus}"]', f'["{recipe.parent / "missing.txt"}"]'))
    with pytest.raises(UserError, match=r"^stage tok \(tokenizer_train\): .*missing\.txt") as e:
        run(path)
    record = json.loads((recipe.parent / "runs/demo/stages/tok/stage.json").read_text())
    assert record["status"] == "failed" and record["exit_code"] == 2
    assert record["error"] == str(e.value).split(": ", 1)[1]
    assert f"error: {record['error']}" in (recipe.parent / "runs/demo/stages/tok/log.txt").read_text()
