"""Multiple-choice tasks from JSONL, scored like lm-eval's `multiple_choice` output type.

One item per line: {"context": str, "choices": [str, ...], "label": int}. Choice i is the continuation
" " + choices[i] of the context (lm-eval's default target delimiter); trailing spaces of the context move to the
continuation, and the pair is tokenized as lm-eval's HF model does (the whole string with the tokenizer's own
special tokens, the continuation being what follows the context's tokens), so acc agrees with
`lm_eval --model hf` on a task with doc_to_text=context, doc_to_choice=choices, doc_to_target=label.

acc: argmax of the summed log-likelihood; acc_norm: of the log-likelihood per character of the choice (lm-eval's
acc_norm); acc_bytes: per UTF-8 byte of the choice (lm-eval's acc_bytes). With `fewshot` k, each item's context
is preceded by the first k other items, each as context + " " + its right choice, joined by blank lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxadapt import fs
from jaxadapt.errors import UserError
from jaxadapt.io.jsonl import json_object
from jaxadapt.eval.bpb import prefix_id
from jaxadapt.eval.scorer import Scorer


@dataclass(frozen=True)
class Item:
    context: str
    choices: tuple[str, ...]
    label: int


def read_task(path: str | Path) -> list[Item]:
    """A task file, local or a URL (gs://...)."""
    if not fs.isfile(str(path)):
        raise UserError(f"--mc {path}: no such file")
    items = []
    for n, line in enumerate(fs.read_text(path).splitlines(), 1):
        if line.strip():
            items.append(_item(line, f"{path}:{n}"))
    if not items:
        raise UserError(f"{path}: no items (expected one JSON object per line with context, choices, label)")
    return items


def _item(line: str, where: str) -> Item:
    row = json_object(line, where)
    ctx, choices, label = row.get("context"), row.get("choices"), row.get("label")
    if not isinstance(ctx, str):
        raise UserError(f"{where}: 'context' must be a string, got {ctx!r}")
    if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c for c in choices)):
        raise UserError(f"{where}: 'choices' must be a list of at least 2 non-empty strings, got {choices!r}")
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise UserError(f"{where}: 'label' must be an integer in [0, {len(choices) - 1}], got {label!r}")
    return Item(ctx, tuple(choices), label)


def with_fewshot(items: list[Item], k: int) -> list[str]:
    """The context of each item with k examples (the first k other items) in front."""
    if k < 0 or (k and k >= len(items)):
        raise UserError(f"--fewshot {k}: expected 0 <= fewshot < number of items ({len(items)})")
    shots = [f"{it.context} {it.choices[it.label]}" for it in items[:k + 1]]
    return [("\n\n".join([s for j, s in enumerate(shots) if j != i][:k] + [it.context]) if k else it.context)
            for i, it in enumerate(items)]


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's HFLM._encode_pair for causal models (an empty context is conditioned on the prefix token)."""
    if not context:
        return [prefix_id(tokenizer)], tokenizer.encode(continuation, add_special_tokens=False)
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, ctx = tokenizer.encode(context + continuation), tokenizer.encode(context)
    return ctx, whole[len(ctx):]


def score_task(scorer: Scorer, tokenizer: Any, items: list[Item], seq_len: int, fewshot: int = 0,
               name: str = "task") -> dict:
    """{items, acc, acc_norm, acc_bytes, fewshot}."""
    rows = []
    for i, (it, ctx) in enumerate(zip(items, with_fewshot(items, fewshot))):
        for choice in it.choices:
            c, cont = encode_pair(tokenizer, ctx, " " + choice)
            if not cont or len(cont) > seq_len:
                raise UserError(f"{name} item {i + 1}: choice {choice!r} encodes to {len(cont)} tokens; expected 1 to "
                                f"--seq-len ({seq_len})")
            seq = np.asarray(c + cont, np.int32)[-(seq_len + 1):]
            rows.append((seq[:-1], seq[1:], np.arange(len(seq) - 1) >= len(seq) - 1 - len(cont)))
    lls = scorer.logprobs(rows, desc=f"mc {name}")
    hits = {"acc": 0, "acc_norm": 0, "acc_bytes": 0}
    start = 0
    for it in items:
        ll = lls[start:start + len(it.choices)]
        start += len(it.choices)
        chars = np.array([len(c) for c in it.choices], np.float64)
        nbytes = np.array([len(c.encode("utf-8")) for c in it.choices], np.float64)
        for key, score in (("acc", ll), ("acc_norm", ll / chars), ("acc_bytes", ll / nbytes)):
            hits[key] += int(np.argmax(score) == it.label)
    return {"items": len(items), **{k: v / len(items) for k, v in hits.items()}, "fewshot": fewshot}
