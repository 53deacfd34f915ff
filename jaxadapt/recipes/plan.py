"""`plan(recipe)`: every stage resolved (references substituted, output path fixed, config checked against its
entry point, hashed) before the first one runs, so a typo in the last stage costs seconds, not a training run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jaxadapt import fs
from jaxadapt.config.loader import config_hash, load_config, to_dict
from jaxadapt.errors import UserError
from jaxadapt.recipes.kinds import KINDS, check
from jaxadapt.recipes.refs import substitute
from jaxadapt.recipes.schema import Recipe, Stage


@dataclass(frozen=True)
class PlannedStage:
    name: str
    kind: str
    config: dict[str, Any]  # resolved; for train the whole RunConfig less name/runs_root (set by the runner)
    out: str  # what `${stages.NAME.out}` means: the stage's output file or dir
    config_hash: str
    call: dict[str, Any]  # what the stage's process runs (recipes/stage.py): kind and config, a train stage's in full

    def describe(self) -> str:
        """The stage as a log line: its command and the options the recipe sets."""
        if self.kind == "train":
            return f"jaxadapt train into {self.out} (config {self.config_hash})"
        options = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in self.config.items())
        return f"jaxadapt {' '.join(KINDS[self.kind].command)} with {options}"


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
            p = _command(recipe, st, config, f"{source} (stages.{st.name}.config, for `jaxadapt "
                                             f"{' '.join(KINDS[st.kind].command)}`)")
        scope["stages"][st.name] = {"out": p.out}
        planned.append(p)
    return planned


def resolved(recipe: Recipe, planned: list[PlannedStage]) -> Recipe:
    """The recipe as it ran: references substituted, outputs and train configs spelled out (no `base:` left)."""
    return dataclasses.replace(recipe, stages=tuple(Stage(p.name, p.kind, p.config) for p in planned))


def _command(recipe: Recipe, st: Stage, config: dict, source: str) -> PlannedStage:
    kind = KINDS[st.kind]
    if config.get(kind.out_key) is None:
        config = {**config, kind.out_key: str(stage_dir(recipe, st.name) / kind.out_name)}
    check(st.kind, config, source)
    digest = config_hash({"kind": st.kind, "config": config})
    return PlannedStage(st.name, st.kind, config, str(config[kind.out_key]), digest,
                        {"kind": st.kind, "config": config})


def _train(recipe: Recipe, st: Stage, config: dict, source: Path, where: str) -> PlannedStage:
    from jaxadapt.train.config import RunConfig, validate

    for key in ("name", "runs_root"):
        if key in config:
            raise UserError(f"{where}.{key}: set by the recipe (the run dir of a train stage is stages/NAME/out)")
    sdir = stage_dir(recipe, st.name)
    cfg = load_config(RunConfig, {**config, "runs_root": str(sdir), "name": "out"},
                      source=f"{source} (stages.{st.name}.config)", base_dir=source.parent)
    try:
        validate(cfg)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    plain = {k: v for k, v in to_dict(cfg).items() if k not in ("name", "runs_root")}
    return PlannedStage(st.name, st.kind, plain, str(sdir / "out"), config_hash(cfg),
                        {"kind": "train", "config": to_dict(cfg)})
