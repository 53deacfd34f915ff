"""`${vars.NAME}` and `${stages.NAME.out}` inside stage configs: checked and substituted before anything runs.

A string that is exactly one reference takes the referenced value with its type (`steps: ${vars.steps}` stays an
int); a reference inside a longer string is formatted into it. A stage may only name stages before it, so a
recipe's data flow is readable top to bottom and its order can be trusted.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from jaxadapt.errors import UserError

REF = re.compile(r"\$\{([^}]*)\}")


def substitute(value: Any, scope: dict[str, Any], where: str) -> Any:
    """`value` (nested dicts/lists/scalars) with every reference replaced from `scope` ({'vars': ..., 'stages': ...})."""
    if isinstance(value, dict):
        return {k: substitute(v, scope, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, scope, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    whole = REF.fullmatch(value)
    if whole:
        return lookup(whole.group(1), scope, where)

    def text(m: re.Match) -> str:
        found = lookup(m.group(1), scope, where)
        if isinstance(found, (dict, list)):
            raise UserError(f"{where}: ${{{m.group(1)}}} is a {type(found).__name__}; it cannot go inside a string")
        return str(found)

    return REF.sub(text, value)


def lookup(ref: str, scope: dict[str, Any], where: str) -> Any:
    """One dotted reference; a dangling one names the closest existing key."""
    parts = ref.strip().split(".")
    if parts[0] not in ("vars", "stages") or len(parts) < 2:
        raise UserError(f"{where}: ${{{ref}}}: expected ${{vars.NAME}} or ${{stages.NAME.out}}")
    node: Any = scope
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            known = list(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(part, known, n=1)
            prefix = ".".join(parts[:i])
            if prefix == "stages":
                what = f"no stage {part!r} before this one"
            else:
                what = f"{prefix} has no {part!r}"
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known) or 'none'}"
            raise UserError(f"{where}: ${{{ref}}}: {what} ({hint})")
        node = node[part]
    return node
