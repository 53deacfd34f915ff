"""Validate a config tree that sits inside another YAML file (a recipe's train stage, a sweep file).

`load_config` reads files, so the tree is written to a temporary file first; errors then name where the tree
really came from instead of that file, and a relative `base:` is taken relative to the enclosing file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from jaxadapt.config.loader import beside, dump_yaml, load_config
from jaxadapt.errors import UserError


def load_inline(schema: type, data: dict[str, Any], label: str, base_dir: Path, overrides=()):
    """`load_config(schema, ...)` on `data`; `label` (e.g. 'recipe.yaml, stages.cpt.config') replaces the temp path."""
    data = dict(data)
    if "base" in data:
        bases = data["base"] if isinstance(data["base"], list) else [data["base"]]
        data["base"] = [str(beside(base_dir, b)) if isinstance(b, str) else b for b in bases]
    with tempfile.TemporaryDirectory(prefix="jaxadapt-inline-") as tmp:
        path = Path(tmp) / "inline.yaml"
        path.write_text(dump_yaml(data))
        try:
            return load_config(schema, path, overrides)
        except UserError as e:
            raise UserError(str(e).replace(str(path), label)) from None
