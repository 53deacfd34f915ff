"""Retention: an adapted model's bits per byte against its base model's, per role-tagged corpus.

Roles say why a corpus is there: `target` (the new language, possibly of other domains than the training data),
`source` (the language the model knew) and `other` (a language neither model was trained on here). One rule flags
them all: a corpus is REGRESSED when the adapted bpb is worse than the base's by more than `threshold` percent,
relative to the base. A target that got better is the point of adapting and a source or other corpus that got
better is welcome, so only getting worse is flagged. Bits per byte is comparable across the two models even when
their tokenizers differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from jaxadapt.errors import UserError

ROLES = ("target", "source", "other")
DEFAULT_THRESHOLD = 2.0


def check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise UserError(f"--threshold {threshold}: expected a percentage >= 0")
    return float(threshold)


def compare(roles: Mapping[str, str], base_bpb: Mapping[str, float], bpb: Mapping[str, float],
            threshold: float = DEFAULT_THRESHOLD) -> dict:
    """{"threshold_pct", "rows": [{corpus, role, base_bpb, bpb, change_pct, flagged}], "flagged": [corpus]} for
    each corpus of `roles` ({name: role}); change_pct = (bpb - base_bpb) / base_bpb * 100."""
    threshold = check_threshold(threshold)
    rows = []
    for name, role in roles.items():
        if role not in ROLES:
            raise UserError(f"corpus {name!r}: role {role!r}; expected one of {', '.join(ROLES)}")
        change = (bpb[name] - base_bpb[name]) / base_bpb[name] * 100
        rows.append({"corpus": name, "role": role, "base_bpb": base_bpb[name], "bpb": bpb[name],
                     "change_pct": change, "flagged": change > threshold})
    return {"threshold_pct": threshold, "rows": rows, "flagged": [r["corpus"] for r in rows if r["flagged"]]}


HEAD = ("corpus", "role", "base bpb", "adapted bpb", "change %", "flag")


def _cells(row: dict) -> tuple[str, ...]:
    return (row["corpus"], row["role"], f"{row['base_bpb']:.4f}", f"{row['bpb']:.4f}", f"{row['change_pct']:+.2f}",
            "REGRESSED" if row["flagged"] else "ok")


def summary(ret: dict) -> str:
    """One line: the regressed corpora with their change, or that none regressed."""
    bad = [f"{r['corpus']} ({r['change_pct']:+.2f}%)" for r in ret["rows"] if r["flagged"]]
    limit = f"threshold {ret['threshold_pct']:g}%"
    return f"REGRESSED: {', '.join(bad)} ({limit})" if bad else f"no corpus regressed ({limit})"


def format_retention(ret: dict) -> str:
    """A plain-text table for the terminal, then the summary line."""
    widths = [max([len(h), *(len(_cells(r)[i]) for r in ret["rows"])]) for i, h in enumerate(HEAD)]
    lines = ["  ".join(c.rjust(w) if i in (2, 3, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
             for cells in (HEAD, *map(_cells, ret["rows"]))]
    return "\n".join([*(line.rstrip() for line in lines), summary(ret)])


def markdown_retention(ret: dict) -> str:
    """A Markdown table for `jaxadapt report`, then the summary line."""
    lines = ["| " + " | ".join(HEAD) + " |", "|---|---|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in ret["rows"]]
    return "\n".join([*lines, "", summary(ret)])
