"""One JSONL record as a dict, or a UserError that says where (file:line) and what is wrong."""

from __future__ import annotations

import json

from jaxadapt.errors import UserError


def json_object(text: str, where: str, error: type[UserError] = UserError) -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise error(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row
