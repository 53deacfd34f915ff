"""Documents -> next-token examples, a batch of documents per call to the Rust tokenizer.

An example holds (input, target) *pairs*: `input_ids[t]` predicts `targets[t]`. Packing pairs instead of tokens
means a document cut across two rows still has every target exactly once, and the trainer never shifts.
`num_bytes` sits on a document's last pair, so after any packing the bytes of each row's finished documents are
one sum away (bits per byte needs the UTF-8 bytes of the text the loss covers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from grain.experimental import FlatMapTransform

from jaxadapt.errors import UserError


def special_ids(tokenizer: Any, bos: str, eos: str) -> tuple[int | None, int | None]:
    """BOS/EOS ids to put around each document under the policies ("auto" | "always" | "never")."""
    bos_id, eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    for name, policy, tid in (("bos", bos, bos_id), ("eos", eos, eos_id)):
        if policy == "always" and tid is None:
            raise UserError(f"data: {name}='always' but the tokenizer has no {name} token; use 'auto' or 'never'")
    if bos == "never" or bos_id is None:
        bos_id = None
    elif bos == "auto":  # do what the tokenizer does by itself
        ids = tokenizer("a", add_special_tokens=True)["input_ids"]
        bos_id = bos_id if ids and ids[0] == bos_id else None
    return bos_id, (None if eos == "never" else eos_id)


def pairs(tokens: np.ndarray, mask: np.ndarray | None = None, num_bytes: int | None = None) -> dict | None:
    """The example of one token sequence; `mask[i]` says whether token i counts as a target. None if < 2 tokens."""
    if len(tokens) < 2:
        return None
    tokens = np.asarray(tokens, np.int32)
    ex = {"input_ids": tokens[:-1], "targets": tokens[1:],
          "loss_mask": np.ones(len(tokens) - 1, np.int8) if mask is None else np.asarray(mask[1:], np.int8)}
    if num_bytes is not None:
        ex["num_bytes"] = np.zeros(len(tokens) - 1, np.int32)
        ex["num_bytes"][-1] = num_bytes
    return ex


class EncodeDocuments(FlatMapTransform):
    """A list of `{"doc": text}` -> the list of their examples (documents under 2 tokens drop out)."""

    def __init__(self, tokenizer: Any, bos: str, eos: str, *, batch: int, with_bytes: bool):
        self.max_fan_out = batch
        self._backend = tokenizer.backend_tokenizer
        self._bos, self._eos = special_ids(tokenizer, bos, eos)
        self._with_bytes = with_bytes

    def flat_map(self, docs: list[dict]) -> list[dict]:
        texts = [d["doc"] for d in docs]
        out = []
        for text, enc in zip(texts, self._backend.encode_batch_fast(texts, add_special_tokens=False)):
            ids = enc.ids
            if self._bos is not None:
                ids = [self._bos, *ids]
            if self._eos is not None:
                ids.append(self._eos)
            ex = pairs(np.asarray(ids, np.int32), num_bytes=len(text.encode("utf-8")) if self._with_bytes else None)
            if ex is not None:
                out.append(ex)
        return out
