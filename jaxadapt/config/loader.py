"""Run configs: YAML files (with `base:` inheritance) plus `a.b=value` overrides, checked against a dataclass.

Every command (train, run, sweep) describes its settings as a frozen dataclass and calls `load_config`, on a file or
on a mapping that came from somewhere else (a recipe's stage config, a sweep file), so a config tree inside another
file is checked with the same rules and messages as a file of its own. The dataclass is the schema: field types and
defaults are read from it, so there is no second list of valid keys to keep in sync. All validation happens here,
before a device is touched: a typo or a wrong type fails in a second with the dotted path, the file it came from and
what was expected, not an hour into a run.

YAML is read with the YAML 1.2 core schema rather than PyYAML's YAML 1.1 default, because 1.1 has traps that hit
ML configs: `lr: 3e-4` is a string there (no dot), `lang: no` is False (Norwegian), `010` is 8 and `2024-01-01` a
date. Here `3e-4` is a float, only true/false are booleans, and there are no timestamps.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import os
import posixpath
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from jaxadapt.errors import UserError
from jaxadapt import fs

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_REPLACED = (_INT, _FLOAT, _BOOL, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars (see the module docstring)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# Ints before floats: the first matching resolver wins, and the float pattern also matches plain digits.
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+(?:_[0-9]+)*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text[:2] in ("0o", "0x") else int(text)  # decimal even with leading zeros


_Loader.add_constructor(_INT, _construct_int)


class _Dumper(yaml.SafeDumper):
    """Quotes every string that either YAML 1.1 or our 1.2 loader would read as something else.

    The emitter writes a string unquoted when the resolver would read it back as a string; giving it both rule
    sets keeps dumped files readable by our loader (`'3e-4'` stays a string) and by any 1.1 reader (`'no'`).
    """


_Dumper.yaml_implicit_resolvers = {
    first: yaml.SafeDumper.yaml_implicit_resolvers.get(first, []) + _Loader.yaml_implicit_resolvers.get(first, [])
    for first in set(yaml.SafeDumper.yaml_implicit_resolvers) | set(_Loader.yaml_implicit_resolvers)
}

KeyPath = tuple[str | int, ...]  # a position in the config tree: keys and list indices


# ---------------------------------------------------------------------------------------------- public API
class Spelled:
    """Base of a config value that YAML spells as one string but the code reads parsed (`train.trainable:
    lora+embeddings`): the loader builds it as `cls(text)`, which parses and checks it once, and writes it back as
    `str(value)`, which must give the text it was built from, so a saved config reads back equal."""


def load_config(schema: type, config: str | os.PathLike | Mapping[str, Any] | None = None,
                overrides: typing.Iterable[str] = (), *, source: str | None = None, base_dir=None):
    """Read `config` (a YAML file and its bases, or a mapping), apply `overrides` (`a.b.c=value`), validate and
    build a `schema` instance.

    Every problem is a `UserError` naming the dotted key, the file (or 'override') that set it and what was
    expected; the keys of a mapping are named as coming from `source` (e.g. 'recipe.yaml (stages.cpt.config)').
    A mapping's `base:` names files to inherit from only when `base_dir` (a dir or a URL) says where they are
    relative to, as a file's bases are relative to the file; without it `base` is an ordinary key (the
    `tokenizer extend` stage's own `base`). Missing keys take the dataclass defaults.
    """
    if isinstance(config, Mapping):
        top = source or "a mapping"
        data = copy.deepcopy(dict(config))
        if base_dir is None:
            origins = {p: top for p in _key_paths(data, ())}
        else:
            data, origins = _inherit(data, top, fs.path(base_dir), ())
    elif config is not None:
        top = str(config)
        data, origins = _load_tree(fs.path(config), ())
    else:
        top, data, origins = "no config file", {}, {}
    for item in overrides:
        _apply_override(data, origins, item)
    return _Builder(origins, top).build(schema, data, ())


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """One YAML file as a dict (no inheritance), with the same scalar rules and errors as `load_config`."""
    path = fs.path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {_yaml_message(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level, got {_describe(data)}")
    return data


def parse_value(text: str, what: str) -> Any:
    """One override value read with the same YAML 1.2 scalar rules as config files (`3e-4` a float, `no` a string)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise UserError(f"{what}: invalid YAML value: {_yaml_message(e)}") from None


def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    """`a.b.c=value` -> (('a', 'b', 'c'), value), the value read as YAML; anything else is a UserError."""
    dotted, sep, text = item.partition("=")
    path = tuple(k.strip() for k in dotted.split("."))
    if not sep or not all(path):
        raise UserError(f"override {item!r}: expected key.path=value")
    return path, parse_value(text, f"override {item!r}")


def to_dict(cfg) -> dict[str, Any]:
    """The config as plain YAML/JSON data: nested dicts, lists, scalars (tuples become lists)."""
    return _plain(cfg)


def dump_yaml(cfg) -> str:
    """YAML text that `load_config(type(cfg), ...)` reads back to an equal config; keys in schema order."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


def config_hash(cfg, length: int = 12) -> str:
    """A short, stable id for a resolved config: sha256 of its canonical JSON (sorted keys, no whitespace).

    Equal configs hash equally across processes and machines (no Python `hash()` salt); any value change,
    including a field that took its default, changes the hash.
    """
    text = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def save_resolved(cfg, run_dir: str | os.PathLike, name: str = "config.yaml"):
    """Write the fully resolved config into `run_dir` so a run records exactly what it ran with.

    Complete or not at all (`fs.write_text`): a crash or a concurrent reader never sees half a file.
    """
    run_dir = fs.path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dest = run_dir / name
    fs.write_text(dest, dump_yaml(cfg))
    return dest


# ---------------------------------------------------------------------------------------------- files and merging
def _load_tree(path: Path, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """A file merged over its bases (in order, later wins), plus which file set each key."""
    seen = [_identity(p) for p in chain]
    if _identity(path) in seen:
        cycle = " -> ".join(str(p) for p in (*chain[seen.index(_identity(path)):], path))
        raise UserError(f"config inheritance cycle: {cycle}")
    return _inherit(read_yaml(path), str(path), path.parent, (*chain, path))


def _inherit(raw: dict, origin: str, directory, chain: tuple[Path, ...]) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """`raw` (set by `origin`) merged over the files its `base:` names relative to `directory`."""
    bases = raw.pop("base", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise UserError(f"base: expected a file name or a list of file names, got {_describe(bases)} in {origin}")
    data: dict[str, Any] = {}
    origins: dict[KeyPath, str] = {}
    for base in bases:
        base_path = beside(directory, base)
        if not base_path.is_file():
            raise UserError(f"base: {base_path} not found (named in {origin})")
        base_data, base_origins = _load_tree(base_path, chain)
        data = _merge(data, base_data)
        origins.update(base_origins)
    origins.update({p: origin for p in _key_paths(raw, ())})
    return _merge(data, raw), origins


def beside(directory, name: str):
    """`name` (a `base:` entry, a sweep's base) relative to `directory`, a local dir or a URL: a URL or an absolute
    path as it is; `..` is resolved in URLs too, which object stores do not do themselves."""
    if not fs.is_url(name) and (os.path.isabs(name) or not fs.is_url(str(directory))):
        return fs.path(os.path.normpath(os.path.join(str(directory), name)))
    url = name if fs.is_url(name) else f"{str(directory).rstrip('/')}/{name}"
    scheme, rest = url.split("://", 1)
    return fs.path(f"{scheme}://{posixpath.normpath(rest)}")


def _identity(path) -> str:
    return str(path) if fs.is_url(str(path)) else str(path.resolve())


def _merge(under: dict, over: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else (lists included) is replaced by `over`."""
    out = dict(under)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _key_paths(data: dict, prefix: KeyPath):
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from _key_paths(value, (*prefix, key))


def _apply_override(data: dict, origins: dict[KeyPath, str], item: str) -> None:
    """`a.b.c=value`: set (replace, not merge) one key, creating sections on the way; the value is YAML.

    In a list, a number is an index and any other key the name of an item: `data.sources.0.weight=0.3`, and
    `data.sources.nl.weight=0.3` or a recipe's `stages.tok.config.vocab_size=300` for the item whose `name` that is.
    Origins record the mapping keys only, as `_Builder` does."""
    path, value = parse_override(item)
    node: Any = data
    keys: list[str] = []
    for n, key in enumerate(path):
        if isinstance(node, list):
            key = _item(node, key, item, path[:n])
        else:
            keys.append(key)
            if n < len(path) - 1 and not isinstance(node.get(key), (dict, list)):
                node[key] = {}
        if n == len(path) - 1:
            node[key] = value
        else:
            node = node[key]
    at = tuple(keys)
    for p in [p for p in origins if p[: len(at)] == at]:
        del origins[p]
    origins[at] = "override"
    if isinstance(value, dict):
        origins.update({p: "override" for p in _key_paths(value, at)})


def _item(items: list, key: str, item: str, where: tuple[str, ...]) -> int:
    """The position in `items` that an override's `key` names: an index, or an item's `name`."""
    if key.isdigit() and int(key) < len(items):
        return int(key)
    names = [x.get("name") if isinstance(x, dict) else None for x in items]
    if key in names:
        return names.index(key)
    known = [str(x) for x in names if x is not None]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else (f"names: {', '.join(known)}" if known else "no item has a name")
    raise UserError(f"override {item!r}: {'.'.join(where)} is a list of {len(items)}; {key!r} is neither an index into "
                    f"it nor the name of an item ({hint})")


# ---------------------------------------------------------------------------------------------- validation
class _Builder:
    """Turns merged YAML data into schema instances, checking every value against its annotation."""

    def __init__(self, origins: dict[KeyPath, str], top: str):
        self.origins, self.top = origins, top

    def where(self, path: KeyPath) -> str:
        """The file that set `path`, or the nearest enclosing section that has one."""
        keys = tuple(k for k in path if isinstance(k, str))
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.origins:
                return self.origins[keys[:n]]
        return self.top

    def where_any(self, path: KeyPath) -> str:
        """The files (or 'override') that set `path` or any key inside it: a check of a whole section may be about
        any of them."""
        keys = tuple(k for k in path if isinstance(k, str))
        inside = {o for k, o in self.origins.items() if k[:len(keys)] == keys and len(k) > len(keys)}
        return " or ".join(sorted(inside | {self.where(path)}))

    def fail(self, path: KeyPath, message: str):
        raise UserError(f"{_dotted(path)}: {message} in {self.where(path)}")

    def build(self, tp: Any, value: Any, path: KeyPath, frozen: bool = False) -> Any:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any:
            return value
        if isinstance(tp, type) and issubclass(tp, Spelled):
            if not isinstance(value, str):
                self.fail(path, f"expected a string ({tp.__name__}), got {_describe(value)}")
            try:
                return tp(value)
            except ValueError as e:
                self.fail(path, str(e))
        if dataclasses.is_dataclass(tp):
            return self.build_dataclass(tp, value, path)
        if origin in (Union, types.UnionType):
            return self.build_union(tp, args, value, path, frozen)
        if origin is Literal:
            if any(value == a and type(value) is type(a) for a in args):
                return value
            self.fail(path, f"{value!r} is not one of {', '.join(repr(a) for a in args)}")
        if tp is type(None):
            if value is not None:
                self.fail(path, f"expected null, got {_describe(value)}")
            return None
        if tp is bool or tp is str:
            if not isinstance(value, tp):
                hint = "; quote it to make it a string" if tp is str and _is_scalar(value) else ""
                self.fail(path, f"expected {tp.__name__}, got {_describe(value)}{hint}")
            return value
        if tp is int or tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float) if tp is float else int):
                self.fail(path, f"expected {tp.__name__}, got {_describe(value)}")
            return tp(value)
        if tp in (list, tuple) or origin in (list, tuple):
            return self.build_sequence(tp, origin or tp, args, value, path, frozen)
        if tp is dict or origin is dict:
            key_tp, value_tp = args or (Any, Any)
            if not isinstance(value, dict):
                self.fail(path, f"expected a mapping, got {_describe(value)}")
            return {self.build(key_tp, k, (*path, str(k))): self.build(value_tp, v, (*path, str(k)), frozen)
                    for k, v in value.items()}
        raise TypeError(f"{_dotted(path)}: the schema uses {tp!r}, which load_config does not support")

    def build_dataclass(self, tp: type, value: Any, path: KeyPath):
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping ({tp.__name__}), got {_describe(value)}")
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        for key in value:
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = (f"did you mean {_dotted((*path, close[0]))}?" if close
                        else f"valid keys: {', '.join(fields) or 'none'}")
                self.fail((*path, str(key)), f"unknown key ({hint})")
        hints = typing.get_type_hints(tp)
        frozen = tp.__dataclass_params__.frozen
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = self.build(hints[name], value[name], (*path, name), frozen)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail((*path, name), f"required key is missing ({_type_name(hints[name])}, no default)")
        try:
            return tp(**kwargs)
        except ValueError as e:  # a __post_init__ check of the schema itself (UserError included)
            prefix = f"{_dotted(path)}: "
            message = str(e)[len(prefix):] if str(e).startswith(prefix) else str(e)
            raise UserError(f"{prefix}{message} in {self.where_any(path)}") from None

    def build_union(self, tp: Any, args: tuple, value: Any, path: KeyPath, frozen: bool):
        non_null = [a for a in args if a is not type(None)]
        if value is None and len(non_null) < len(args):
            return None
        if len(non_null) == 1:  # Optional[X]: X's own error is the precise one
            return self.build(non_null[0], value, path, frozen)
        for arm in non_null:
            try:
                return self.build(arm, value, path, frozen)
            except UserError:
                continue
        self.fail(path, f"expected {_type_name(tp)}, got {_describe(value)}")

    def build_sequence(self, tp: Any, origin: type, args: tuple, value: Any, path: KeyPath, frozen: bool):
        """YAML lists become tuples when the annotation says tuple or the dataclass is frozen (so it hashes)."""
        if not isinstance(value, list):
            self.fail(path, f"expected a list ({_type_name(tp)}), got {_describe(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                self.fail(path, f"expected a list of {len(args)} items ({_type_name(tp)}), got {len(value)}")
            items = [self.build(a, v, (*path, i), frozen) for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_tp = args[0] if args else Any
            items = [self.build(item_tp, v, (*path, i), frozen) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or frozen else items


# ---------------------------------------------------------------------------------------------- small helpers
def _plain(x: Any) -> Any:
    if isinstance(x, Spelled):
        return str(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _dotted(path: KeyPath) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out or "(top level)"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and not typing.get_args(tp):
        return "null" if tp is type(None) else tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = {dict: "mapping", list: "list"}.get(type(value), type(value).__name__)
    return f"{text} ({kind})"


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, bool)) or value is None


def _yaml_message(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem
