"""`plan(recipe)`: every stage resolved (references substituted, output path fixed, command line built and
checked, config hashed) before the first one runs, so a typo in the last stage costs seconds, not a training run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxadapt import fs
from jaxadapt.config.loader import config_hash, dump_yaml, to_dict
from jaxadapt.errors import UserError
from jaxadapt.recipes.inline import load_inline
from jaxadapt.recipes.kinds import KINDS, command_args
from jaxadapt.recipes.refs import substitute
from jaxadapt.recipes.schema import Recipe, Stage

TRAIN_FILE = "train.yaml"


@dataclass(frozen=True)
class PlannedStage:
    name: str
    kind: str
    config: dict[str, Any]  # resolved; for train the whole RunConfig less name/runs_root (set by the runner)
    out: str  # what `${stages.NAME.out}` means: the stage's output file or dir
    args: tuple[str, ...]  # the command line after `jaxadapt`
    config_hash: str
    files: dict[str, str]  # file name -> text, written into the stage dir before the command runs


def run_dir(recipe: Recipe) -> Path:
    """runs_root/NAME: a `pathlib.Path`, or for a URL root (gs://...) an `etils.epath.Path` (fs.path)."""
    return fs.path(recipe.runs_root) / recipe.name


def stage_dir(recipe: Recipe, name: str) -> Path:
    return run_dir(recipe) / "stages" / name


def plan(recipe: Recipe, source: str | Path) -> list[PlannedStage]:
    """Resolve the stages in order; `source` (the recipe file) names errors and anchors train configs' `base:`."""
    scope: dict[str, Any] = {"vars": recipe.vars, "stages": {}}
    planned = []
    for st in recipe.stages:
        where = f"{source}: stages.{st.name}.config"
        config = substitute(st.config, scope, where)
        if st.kind == "train":
            p = _train(recipe, st, config, fs.path(source), where)
        else:
            p = _command(recipe, st, config, where)
        scope["stages"][st.name] = {"out": p.out}
        planned.append(p)
    return planned


def resolved(recipe: Recipe, planned: list[PlannedStage]) -> Recipe:
    """The recipe as it ran: references substituted, outputs and train configs spelled out (no `base:` left)."""
    return dataclasses.replace(recipe, stages=tuple(Stage(p.name, p.kind, p.config) for p in planned))


def _command(recipe: Recipe, st: Stage, config: dict, where: str) -> PlannedStage:
    kind = KINDS[st.kind]
    if config.get(kind.out_key) is None:
        config = {**config, kind.out_key: str(stage_dir(recipe, st.name) / kind.out_name)}
    args = command_args(st.kind, config, where)
    digest = config_hash({"kind": st.kind, "config": config})
    return PlannedStage(st.name, st.kind, config, str(config[kind.out_key]), tuple(args), digest, {})


def _train(recipe: Recipe, st: Stage, config: dict, source: Path, where: str) -> PlannedStage:
    from jaxadapt.train.config import RunConfig, validate

    for key in ("name", "runs_root"):
        if key in config:
            raise UserError(f"{where}.{key}: set by the recipe (the run dir of a train stage is stages/NAME/out)")
    sdir = stage_dir(recipe, st.name)
    cfg = load_inline(RunConfig, {**config, "runs_root": str(sdir), "name": "out"},
                      f"{source} (stages.{st.name}.config)", source.parent)
    try:
        validate(cfg)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    plain = {k: v for k, v in to_dict(cfg).items() if k not in ("name", "runs_root")}
    return PlannedStage(st.name, st.kind, plain, str(sdir / "out"), ("train", str(sdir / TRAIN_FILE)),
                        config_hash(cfg), {TRAIN_FILE: dump_yaml(cfg)})
