"""The stage kinds a recipe may use (each one jaxadapt command) and how a stage's config becomes its command line.

A stage's config keys are the command's parameter names (`vocab_size`, `corpus`, ...). The command's click
definition is read at validation time, so an unknown key, a missing required option or a bad value fails before
the first stage runs, and a command that lands in the CLI later needs no change here. A kind whose command does
not exist yet is spelled the usual way (`key_name: v` -> `--key-name v`) and left to the command to check.
Commands that take dotted overrides after their options (`calibrate`) get them from the stage's `overrides` list.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from typer.core import TyperArgument, TyperGroup
from typer.exceptions import TyperException

from jaxadapt.errors import UserError


@dataclass(frozen=True)
class Kind:
    command: tuple[str, ...]  # the words after `jaxadapt`
    out_key: str | None  # the parameter that names the stage's output (None: train, whose output is its run dir)
    out_name: str = "out"  # the default output inside the stage dir


KINDS = {
    "convert": Kind(("convert",), "out_dir"),
    "data_split": Kind(("data", "split"), "out"),
    "tokenizer_stats": Kind(("tokenizer", "stats"), "json_out", "stats.json"),
    "tokenizer_train": Kind(("tokenizer", "train"), "out"),
    "tokenizer_extend": Kind(("tokenizer", "extend"), "out"),
    "vocab_adapt": Kind(("vocab", "adapt"), "out"),
    "train": Kind(("train",), None),
    "propagate": Kind(("propagate",), "out"),
    "calibrate": Kind(("calibrate",), "out"),
    "eval": Kind(("eval",), "json_out", "results.json"),
    "export": Kind(("export",), "out_dir"),
}


EXTRA_KEY = "overrides"  # a stage config key: dotted overrides for commands that take them (`jaxadapt calibrate`)


def find_command(words: tuple[str, ...]):
    """The (typer-vendored) click command `jaxadapt WORDS...`, or None when this CLI has no such command yet."""
    import typer.main

    from jaxadapt.cli import app

    cmd = typer.main.get_command(app)
    for word in words:
        cmd = cmd.commands.get(word) if isinstance(cmd, TyperGroup) else None
        if cmd is None:
            return None
    return cmd


def command_args(kind: str, config: dict[str, Any], where: str) -> list[str]:
    """The argument list after `jaxadapt` for a stage of `kind`; `where` names the stage config in errors."""
    words = KINDS[kind].command
    cmd = find_command(words)
    if cmd is None:
        return [*words, *_generic_args(config, where)]
    params = {p.name: p for p in cmd.params if p.name}
    extra = []
    if EXTRA_KEY in config and (cmd.context_settings or {}).get("allow_extra_args"):  # calibrate, quickstart: dotted overrides after the options
        extra = config[EXTRA_KEY]
        if not isinstance(extra, list) or not all(isinstance(o, str) and "=" in o for o in extra):
            raise UserError(f"{where}.{EXTRA_KEY}: expected a list of 'dotted.key=value' strings, got {extra!r}")
        config = {k: v for k, v in config.items() if k != EXTRA_KEY}
    for key in config:
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(params)}"
            raise UserError(f"{where}.{key}: unknown option of `jaxadapt {' '.join(words)}` ({hint})")
    positional, options = [], []
    for p in cmd.params:
        value = config.get(p.name)
        if value is None:
            continue
        if isinstance(p, TyperArgument):
            positional += [_text(v, f"{where}.{p.name}") for v in (value if isinstance(value, list) else [value])]
        elif p.is_flag:
            if not isinstance(value, bool):
                raise UserError(f"{where}.{p.name}: expected true or false, got {value!r}")
            flag = p.opts[0] if value else next(iter(p.secondary_opts), None)
            options += [flag] if flag else []  # a plain flag set to false is simply left off
        else:
            if isinstance(value, list) and not p.multiple:
                raise UserError(f"{where}.{p.name}: expected one value, got a list")
            long = next((o for o in p.opts if o.startswith("--")), p.opts[0])
            for v in value if isinstance(value, list) else [value]:
                options += [long, _text(v, f"{where}.{p.name}")]
    args = [*positional, *options, *extra]
    try:
        cmd.make_context(" ".join(("jaxadapt", *words)), list(args))
    except TyperException as e:  # click's usage errors, as typer vendors them
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        raise UserError(f"{where}: {message} (for `jaxadapt {' '.join(words)}`)") from None
    return [*words, *args]


def _generic_args(config: dict[str, Any], where: str) -> list[str]:
    args = []
    for key, value in config.items():
        opt = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(opt if value else "--no-" + key.replace("_", "-"))
        elif value is not None:
            args += [a for v in (value if isinstance(value, list) else [value]) for a in (opt, _text(v, f"{where}.{key}"))]
    return args


def _text(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)):
        raise UserError(f"{where}: expected a single value, got {value!r}")
    return str(value)
