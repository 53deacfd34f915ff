"""`jaxadapt sweep SWEEP.yaml`: one run per point of a grid (every combination) times a zip (lists in lockstep).

    base: ../recipes/cpt.yaml          # a recipe (it has stages) or a train config; relative to this file
    grid: {lora.rank: [8, 16], optim.learning_rate: [1e-4, 3e-4]}
    zip: {train.steps: [1000, 2000], optim.warmup_steps: [30, 60]}

A point is a list of overrides of the base; its run is named BASE-NAME/key=value,... (a recipe's
`stages.NAME.config.key` shortened to `NAME.key`), so its run dir says what it varied. Every point is loaded and
checked before the first one runs. Runs go one after another here, or `--emit` writes one resolved config per run
and `launch.txt` (one command per line) to start them elsewhere, e.g. `scripts/tpu/launch.sh --file`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxadapt import fs
from jaxadapt.config.loader import beside, dump_yaml, load_config, parse_value, read_yaml
from jaxadapt.errors import UserError
from jaxadapt.fs import atomic_file
from jaxadapt.recipes.plan import plan, resolved
from jaxadapt.recipes.schema import load_recipe

MAX_NAME = 100  # a longer point name is cut and ends in a hash of the whole
STAGE_KEY = re.compile(r"^stages\.([^.]+)\.config\.")


@dataclass(frozen=True)
class SweepSpec:
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zip: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    name: str  # the run name, BASE-NAME/key=value,...
    overrides: tuple[str, ...]  # of the base, the run name included
    config: Any  # the resolved Recipe or RunConfig


def load_sweep(path: str | Path) -> tuple[Path, bool, list[Point]]:
    """(base file, whether it is a recipe, the points), every point validated. `path` may be a URL (gs://...),
    and its base is then found beside it there."""
    path = fs.path(path)
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if not isinstance(base, str):
        raise UserError(f"base: expected the recipe or train config to sweep over, got {base!r} in {path}")
    base_path = beside(path.parent, base)
    if not base_path.is_file():
        raise UserError(f"base: {base_path} not found (named in {path})")
    spec = load_config(SweepSpec, raw, source=str(path))
    is_recipe = _is_recipe(base_path)
    base_name = (load_recipe(base_path) if is_recipe else _load_train(base_path, ())).name
    points, seen = [], set()
    for values in expand(spec, str(path)):
        name = f"{base_name}/{point_name(values)}"
        if name in seen:
            raise UserError(f"two points of {path} get the run name {name!r}; make the values differ more")
        seen.add(name)
        overrides = (*(f"{k}={_yaml_text(v)}" for k, v in values), f"name={name}")
        try:
            if is_recipe:
                recipe = load_recipe(base_path, overrides)
                config = resolved(recipe, plan(recipe, base_path))
            else:
                config = _load_train(base_path, overrides)
        except UserError as e:
            raise UserError(f"sweep point {name}: {e}") from None
        points.append(Point(name, overrides, config))
    return base_path, is_recipe, points


def expand(spec: SweepSpec, source: str) -> list[list[tuple[str, Any]]]:
    """Every grid combination (the last key varying fastest) with every zip position."""
    for section, lists in (("grid", spec.grid), ("zip", spec.zip)):
        for key, values in lists.items():
            if not values:
                raise UserError(f"{section}.{key}: an empty list of values in {source}")
    both = sorted(set(spec.grid) & set(spec.zip))
    if both:
        raise UserError(f"{', '.join(both)}: in both grid and zip in {source}")
    lengths = {k: len(v) for k, v in spec.zip.items()}
    if len(set(lengths.values())) > 1:
        raise UserError(f"zip: the lists must have equal lengths, got {lengths} in {source}")
    if not spec.grid and not spec.zip:
        raise UserError(f"a sweep needs grid or zip keys in {source}")
    grid = itertools.product(*([(k, v) for v in vals] for k, vals in spec.grid.items()))
    zipped = [list(zip(spec.zip, vals)) for vals in zip(*spec.zip.values())] or [[]]
    return [[*g, *z] for g in grid for z in zipped]


def point_name(values: list[tuple[str, Any]]) -> str:
    """`key=value,...`, filesystem-safe; recipe stage keys drop their `stages.` and `config.` parts."""
    text = ",".join(f"{STAGE_KEY.sub(_stage_prefix, k)}={_short(v)}" for k, v in values)
    text = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)
    if len(text) > MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        text = f"{text[:MAX_NAME - 9]}-{digest}"
    return text


def commands(base: Path, is_recipe: bool, points: list[Point], emit: str | Path | None) -> list[list[str]]:
    """One command per point: the base plus overrides, or with `emit` (a dir or a URL) the emitted config file."""
    verb = "run" if is_recipe else "train"
    if emit is None:
        return [["jaxadapt", verb, str(base), *p.overrides] for p in points]
    return [["jaxadapt", verb, str(fs.path(emit) / f"{_leaf(p)}.yaml")] for p in points]


def write_emit(emit: str | Path, points: list[Point], cmds: list[list[str]]) -> None:
    if fs.is_url(str(emit)):
        fs.check_reachable(str(emit), "--emit")
    emit = fs.path(emit)
    for p in points:
        with atomic_file(emit / f"{_leaf(p)}.yaml") as f:
            f.write(dump_yaml(p.config))
    with atomic_file(emit / "launch.txt") as f:
        f.write("".join(shlex.join(c) + "\n" for c in cmds))


def run_all(points: list[Point], cmds: list[list[str]]) -> None:
    """Each run in turn as its own process; a failed run does not stop the others."""
    failed = []
    for p, cmd in zip(points, cmds):
        print(f"=== {p.name}: {shlex.join(cmd)}", flush=True)
        if subprocess.run([sys.executable, "-m", "jaxadapt.cli", *cmd[1:]]).returncode != 0:
            failed.append(p.name)
    if failed:
        raise UserError(f"{len(failed)} of {len(points)} runs failed: {', '.join(failed)}")


def _stage_prefix(m: re.Match) -> str:
    return f"{m.group(1)}."


def _leaf(p: Point) -> str:
    return p.name.rsplit("/", 1)[-1]


def _is_recipe(path: Path) -> bool:
    """Whether the file (or a file it inherits from) has `stages`."""
    raw = read_yaml(path)
    if "stages" in raw:
        return True
    bases = raw.get("base") or []
    return any(_is_recipe(beside(path.parent, b)) for b in ([bases] if isinstance(bases, str) else bases))


def _load_train(path: Path, overrides):
    from jaxadapt.train.config import RunConfig, validate

    cfg = load_config(RunConfig, path, overrides)
    validate(cfg)
    return cfg


def _short(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _yaml_text(value: Any) -> str:
    """The override text that reads back as `value` (a string stays bare when that is unambiguous)."""
    if isinstance(value, str) and value:
        try:
            if parse_value(value, "sweep value") == value:
                return value
        except UserError:
            pass  # not valid YAML on its own: quote it
    return json.dumps(value, ensure_ascii=False)
