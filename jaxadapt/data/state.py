"""Grain iterator states <-> plain JSON, losslessly.

Grain states are nested dicts of ints, but some hold tuples (concatenate-and-split compares its slices with a
tuple sentinel), which JSON would turn into lists and so silently break the restore. Tuples are tagged instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TUPLE = "__tuple__"


def to_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {_TUPLE: [to_json(v) for v in obj]}
    if isinstance(obj, list):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"iterator state holds a {type(obj).__name__}, which JSON cannot carry: {obj!r:.200}")


def from_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TUPLE}:
            return tuple(from_json(v) for v in obj[_TUPLE])
        return {k: from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    return obj
