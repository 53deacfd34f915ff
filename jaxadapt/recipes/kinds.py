"""The stage kinds a recipe may use, each one Python entry point: the typed function its jaxadapt command calls.

A stage's config keys are the entry point's parameter names (`vocab_size`, `corpus`, `json_out`, ...), and its
signature is the stage's schema: `check` turns it into a dataclass and reads the config with `load_config`, so an
unknown key (with the closest one), a missing required option or a value of the wrong type fails before the first
stage runs, naming the recipe file and the key, as a train config does. A train stage's schema is `RunConfig`
itself (recipes/plan.py), and its entry point `train.loop.train`, as for `jaxadapt train`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from jaxadapt.config.loader import load_config, parse_override
from jaxadapt.data import cli as data_cli
from jaxadapt.errors import UserError
from jaxadapt.eval.command import eval_cmd
from jaxadapt.io.cli import convert
from jaxadapt.lep.cli import calibrate, propagate
from jaxadapt.train.cli import export
from jaxadapt.vocab import cli as vocab_cli


@dataclass(frozen=True)
class Kind:
    command: tuple[str, ...]  # the words after `jaxadapt`, for messages
    entry: Callable | None  # the function `jaxadapt COMMAND` calls (None: train, run from a RunConfig)
    out_key: str | None  # the parameter that names the stage's output (None: train, whose output is its run dir)
    out_name: str = "out"  # the default output inside the stage dir


KINDS = {
    "convert": Kind(("convert",), convert, "out_dir"),
    "data_split": Kind(("data", "split"), data_cli.split, "out"),
    "data_parallel": Kind(("data", "parallel"), data_cli.parallel, "out"),
    "tokenizer_stats": Kind(("tokenizer", "stats"), vocab_cli.stats_cmd, "json_out", "stats.json"),
    "tokenizer_train": Kind(("tokenizer", "train"), vocab_cli.train_cmd, "out"),
    "tokenizer_extend": Kind(("tokenizer", "extend"), vocab_cli.extend_cmd, "out"),
    "vocab_adapt": Kind(("vocab", "adapt"), vocab_cli.adapt_cmd, "out"),
    "vocab_map": Kind(("vocab", "map"), vocab_cli.map_cmd, "out", "map.json"),
    "train": Kind(("train",), None, None),
    "propagate": Kind(("propagate",), propagate, "out"),
    "calibrate": Kind(("calibrate",), calibrate, "out"),  # `overrides`: a list of dotted training overrides
    "eval": Kind(("eval",), eval_cmd, "json_out", "results.json"),
    "export": Kind(("export",), export, "out_dir"),
}


def check(kind: str, config: dict[str, Any], source: str) -> dict[str, Any]:
    """`config` read as the arguments of the kind's entry point: every one, defaults filled in. `source` names the
    config in errors (e.g. 'recipe.yaml (stages.tok.config)'). A single value where the entry point takes a list is
    that list of one, as a repeatable option given once."""
    schema = spec(kind)
    lists = {f.name for f in dataclasses.fields(schema) if _is_list(f.type)}
    config = {k: [v] if k in lists and v is not None and not isinstance(v, list) else v for k, v in config.items()}
    args = load_config(schema, config, source=source)
    for item in getattr(args, "overrides", None) or ():  # calibrate's training overrides: malformed ones fail now
        try:
            parse_override(item)
        except UserError as e:
            raise UserError(f"overrides: {e} in {source}") from None
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(args)}


@functools.cache
def spec(kind: str) -> type:
    """The entry point's parameters as a dataclass (names, types, defaults): the typed spec of a stage.

    Not frozen: the loader would turn lists into tuples, and the entry point gets lists, as from the command line."""
    fn = KINDS[kind].entry
    hints = typing.get_type_hints(fn)  # Annotated[T, typer.Option(...)] -> T
    fields = []
    for p in inspect.signature(fn).parameters.values():
        if p.default is inspect.Parameter.empty:
            fields.append((p.name, hints[p.name]))
        else:
            fields.append((p.name, hints[p.name], dataclasses.field(default=p.default)))
    return dataclasses.make_dataclass(f"{kind}_stage", fields, kw_only=True)


def _is_list(tp: Any) -> bool:
    """list[...] or an optional one."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(tp))
    return tp is list or typing.get_origin(tp) is list
