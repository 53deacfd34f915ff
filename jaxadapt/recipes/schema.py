"""The recipe file: a name, a runs root, shared `vars` and an ordered list of stages, each one jaxadapt command.

    name: chocollama-nl
    runs_root: runs
    vars: {corpus: data/nl.jsonl}
    stages:
      - name: tok
        kind: tokenizer_train
        config: {corpus: ["${vars.corpus}"], vocab_size: 32000}
      - name: cpt
        kind: train
        config: {base: ../train/cpt.yaml, model: {tokenizer: "${stages.tok.out}"}}

Overrides are dotted keys as for train configs; `stages.NAME.config.a.b=v` (or `stages.NAME.kind=...`) reaches
into the stage called NAME, as the loader steps into any list of named items. A recipe's `base:` replaces the whole
stage list of its base (lists are not merged).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxadapt.config.loader import load_config
from jaxadapt.config.shipped import shipped_recipe
from jaxadapt.errors import UserError
from jaxadapt.recipes.kinds import KINDS
from jaxadapt.recipes.refs import REF

STAGE_NAME = re.compile(r"[A-Za-z0-9_-]+")
RUN_NAME = re.compile(r"[A-Za-z0-9_.=,+-]+(/[A-Za-z0-9_.=,+-]+)*")  # '/' allowed: sweeps nest their runs


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str  # a key of recipes.kinds.KINDS
    config: dict[str, Any] = field(default_factory=dict)  # the command's parameters; a RunConfig tree for train


@dataclass(frozen=True)
class Recipe:
    name: str
    runs_root: str = "runs"  # the run dir is runs_root/name; stage outputs live in runs_root/name/stages/NAME/
    vars: dict[str, Any] = field(default_factory=dict)
    stages: tuple[Stage, ...] = ()


def load_recipe(path: str | Path, overrides=()) -> Recipe:
    """Read, override and check a recipe (names, kinds); references and stage configs are checked by `plan`."""
    recipe = load_config(Recipe, path, overrides)
    check(recipe, str(path))
    return recipe


def recipe_file(arg: str) -> str:
    """A recipe argument: a path or URL as given, or the name of a recipe that ships with jaxadapt (its file)."""
    if "/" in arg or arg.endswith((".yaml", ".yml", ".json")) or Path(arg).exists():
        return arg
    return str(shipped_recipe(arg))


def check(recipe: Recipe, source: str) -> None:
    if not RUN_NAME.fullmatch(recipe.name) or ".." in recipe.name.split("/"):
        raise UserError(f"name={recipe.name!r}: use letters, digits and _ . = , + - (and / between parts) in {source}")
    if not recipe.stages:
        raise UserError(f"stages: a recipe needs at least one stage in {source}")
    if any(REF.search(str(v)) for v in _leaves(recipe.vars)):
        raise UserError(f"vars: references (${{...}}) are not allowed in vars, only in stage configs, in {source}")
    seen: set[str] = set()
    for i, st in enumerate(recipe.stages):
        if not STAGE_NAME.fullmatch(st.name):
            raise UserError(f"stages[{i}].name={st.name!r}: use letters, digits, _ and - in {source}")
        if st.name in seen:
            raise UserError(f"stages[{i}].name={st.name!r}: two stages have this name in {source}")
        seen.add(st.name)
        if st.kind not in KINDS:
            close = difflib.get_close_matches(st.kind, list(KINDS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(KINDS)}"
            raise UserError(f"stages[{i}] ({st.name}).kind={st.kind!r}: unknown stage kind ({hint}) in {source}")


def _leaves(x: Any):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _leaves(v)
    else:
        yield x
