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
into the stage called NAME, since a YAML list cannot be addressed by dotted keys. A recipe's `base:` replaces the
whole stage list of its base (lists are not merged).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxadapt.config.loader import load_config, parse_value
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
    plain = [o for o in overrides if not o.partition("=")[0].strip().startswith("stages.")]
    recipe = load_config(Recipe, path, plain)
    for item in overrides:
        if item not in plain:
            recipe = _override_stage(recipe, item)
    check(recipe, str(path))
    return recipe


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


def _override_stage(recipe: Recipe, item: str) -> Recipe:
    dotted, sep, text = item.partition("=")
    keys = [k.strip() for k in dotted.split(".")]
    if not sep or len(keys) < 3 or not all(keys) or keys[2] not in ("config", "kind") or (keys[2] == "kind" and len(keys) > 3):
        raise UserError(f"override {item!r}: expected stages.NAME.config.key=value or stages.NAME.kind=value")
    names = [st.name for st in recipe.stages]
    if keys[1] not in names:
        close = difflib.get_close_matches(keys[1], names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"stages: {', '.join(names) or 'none'}"
        raise UserError(f"override {item!r}: no stage named {keys[1]!r} ({hint})")
    value = parse_value(text, f"override {item!r}")
    stages = list(recipe.stages)
    i = names.index(keys[1])
    if keys[2] == "kind":
        stages[i] = dataclasses.replace(stages[i], kind=str(value))
    elif len(keys) == 3:
        if not isinstance(value, dict):
            raise UserError(f"override {item!r}: a stage config must be a mapping")
        stages[i] = dataclasses.replace(stages[i], config=value)
    else:
        config = copy.deepcopy(stages[i].config)
        node = config
        for key in keys[3:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
        stages[i] = dataclasses.replace(stages[i], config=config)
    return dataclasses.replace(recipe, stages=tuple(stages))


def _leaves(x: Any):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _leaves(v)
    else:
        yield x
