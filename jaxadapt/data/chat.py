"""Chat and preference records -> examples whose loss mask is 1 exactly on the assistant's tokens.

The mask comes from the chat template itself: the text an assistant turn adds is what rendering up to and
including that turn adds to rendering the conversation before it with the generation prompt. Each piece is
tokenized on its own, as at inference the prompt is tokenized and the reply generated after it, so no token
straddles a prompt/reply boundary and the masked ids decode to exactly the reply (plus its end-of-turn marker).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from grain.experimental import FlatMapTransform

from jaxadapt.data.tokenize import pairs
from jaxadapt.errors import UserError

log = logging.getLogger("jaxadapt.data")

Messages = list[dict[str, str]]


def conversation(record: dict, where: str) -> Messages:
    """OpenAI `messages`, Alpaca `instruction`/`input`/`output` or `prompt`/`response`, as a message list."""
    if "messages" in record:
        msgs = record["messages"]
    elif "instruction" in record and "output" in record:
        user = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    elif "prompt" in record and "response" in record:
        msgs = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["response"]}]
    else:
        raise UserError(f"{where}: a chat record needs 'messages', 'instruction'+'output' or 'prompt'+'response' "
                        f"(fields: {', '.join(record)})")
    _check(msgs, where)
    if not any(m["role"] == "assistant" for m in msgs):
        raise UserError(f"{where}: the conversation has no assistant message to learn from")
    return msgs


def preference(record: dict, where: str) -> tuple[Messages, Messages]:
    """A DPO record `prompt`/`chosen`/`rejected` as two conversations that differ only in the last reply."""
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
    if missing:
        raise UserError(f"{where}: a preference record needs 'prompt', 'chosen' and 'rejected' (missing: "
                        f"{', '.join(missing)})")
    prompt = record["prompt"]
    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    convs = []
    for key in ("chosen", "rejected"):
        reply = record[key]
        if isinstance(reply, str):
            conv = [*prompt, {"role": "assistant", "content": reply}]
        elif isinstance(reply, list) and reply and reply[-1].get("role") == "assistant":
            conv = reply if reply[:-1] else [*prompt, reply[-1]]
        else:
            raise UserError(f"{where}: '{key}' must be a string or a message list ending with an assistant message")
        _check(conv, where)
        convs.append(conv)
    if convs[0][:-1] != convs[1][:-1]:
        raise UserError(f"{where}: 'chosen' and 'rejected' must share the conversation before the last reply")
    return convs[0], convs[1]


def _check(msgs: Any, where: str) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for m in msgs:
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise UserError(f"{where}: every message needs string 'role' and 'content', got {m!r:.120}")


class ChatRenderer:
    """Cuts a conversation into (text, is_reply) pieces with the tokenizer's chat template and tokenizes them."""

    def __init__(self, tokenizer: Any):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("data: task sft/dpo needs a tokenizer with a chat template (tokenizer_config.json "
                            "'chat_template' or chat_template.jinja)")
        self._tok = tokenizer
        self._backend = tokenizer.backend_tokenizer

    def _render(self, msgs: Messages, generation_prompt: bool, where: str) -> str:
        try:
            return self._tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as e:  # jinja raises TemplateError (or anything a template's raise_exception builds)
            raise UserError(f"{where}: the chat template rejected this conversation: {e}") from None

    def pieces(self, msgs: Messages, where: str, last_only: bool = False) -> list[tuple[str, bool]]:
        """Consecutive texts of the rendered conversation; True marks an assistant reply (the last one only if
        `last_only`). A reply piece ends after the template's end-of-turn marker, before trailing whitespace."""
        out, done = [], ""
        replies = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        for i in replies[-1:] if last_only else replies:
            before = self._render(msgs[:i], True, where)
            after = self._render(msgs[:i + 1], False, where)
            if not (before.startswith(done) and after.startswith(before)):
                raise UserError(f"{where}: the chat template renders earlier turns differently once later turns "
                                f"follow, so the assistant tokens cannot be masked exactly")
            reply = after[len(before):].rstrip()
            out += [(before[len(done):], False), (reply, True)]
            done = before + reply
        full = self._render(msgs, False, where)
        if not full.startswith(done):
            raise UserError(f"{where}: the chat template renders earlier turns differently once later turns follow")
        out.append((full[len(done):], False))
        return [(text, is_reply) for text, is_reply in out if text]

    def encode(self, many: list[list[tuple[str, bool]]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Token ids and reply masks of many piece lists, in one batched tokenizer call."""
        flat = [text for ps in many for text, _ in ps]
        encs = iter(self._backend.encode_batch_fast(flat, add_special_tokens=False))
        out = []
        for ps in many:
            ids, mask = [], []
            for _, is_reply in ps:
                piece = next(encs).ids
                ids += piece
                mask += [is_reply] * len(piece)
            out.append((np.asarray(ids, np.int32), np.asarray(mask, np.int8)))
        return out


class EncodeChats(FlatMapTransform):
    """A list of `{"doc": record}` -> SFT examples (loss on every assistant reply), cut to `seq_len` pairs."""

    def __init__(self, tokenizer: Any, *, seq_len: int, batch: int, with_bytes: bool):
        self.max_fan_out = batch
        self._renderer = ChatRenderer(tokenizer)
        self._tok = tokenizer
        self._seq_len, self._with_bytes = seq_len, with_bytes

    def flat_map(self, docs: list[dict]) -> list[dict]:
        pieces = [self._renderer.pieces(conversation(d["doc"], d["where"]), d["where"]) for d in docs]
        out = []
        for ps, (ids, mask) in zip(pieces, self._renderer.encode(pieces)):
            num_bytes = None
            if self._with_bytes:  # bytes of the reply text that the kept targets cover
                num_bytes = sum(len(text.encode("utf-8")) for text, is_reply in ps if is_reply)
            if len(ids) > self._seq_len + 1:
                ids, mask = ids[:self._seq_len + 1], mask[:self._seq_len + 1]
                if self._with_bytes:
                    num_bytes = len(self._tok.decode(ids[1:][mask[1:] == 1].tolist()).encode("utf-8"))
            ex = pairs(ids, mask, num_bytes)
            if ex is not None and ex["loss_mask"].any():
                out.append(ex)
        return out


class EncodePreferences(FlatMapTransform):
    """A list of `{"doc": record}` -> DPO rows: `chosen_*` and `rejected_*` fields, one pair per row, padded to
    `seq_len`, loss on the final reply only. Pairs whose prompt alone fills `seq_len` are dropped (and logged)."""

    def __init__(self, tokenizer: Any, *, seq_len: int, batch: int):
        self.max_fan_out = batch
        self._renderer = ChatRenderer(tokenizer)
        self._seq_len = seq_len

    def flat_map(self, docs: list[dict]) -> list[dict]:
        convs = [(conv, d["where"]) for d in docs for conv in preference(d["doc"], d["where"])]
        encoded = self._renderer.encode([self._renderer.pieces(conv, where, last_only=True) for conv, where in convs])
        out = []
        for (chosen, rejected), (where, _) in zip(zip(encoded[::2], encoded[1::2]), convs[::2]):
            rows = [self._row(ids, mask) for ids, mask in (chosen, rejected)]
            if rows[0] is None or rows[1] is None:
                log.warning("%s: prompt fills seq_len=%d, pair dropped", where, self._seq_len)
                continue
            out.append({f"{side}_{k}": v for side, row in zip(("chosen", "rejected"), rows) for k, v in row.items()})
        return out

    def _row(self, ids: np.ndarray, mask: np.ndarray) -> dict | None:
        ex = pairs(ids[:self._seq_len + 1], mask[:self._seq_len + 1])
        if ex is None or not ex["loss_mask"].any():
            return None
        n, pad = len(ex["input_ids"]), self._seq_len - len(ex["input_ids"])
        return {"input_ids": np.pad(ex["input_ids"], (0, pad)), "targets": np.pad(ex["targets"], (0, pad)),
                "loss_mask": np.pad(ex["loss_mask"].astype(np.float32), (0, pad)),
                "segment_ids": np.pad(np.ones(n, np.int32), (0, pad)),
                "positions": np.pad(np.arange(n, dtype=np.int32), (0, pad))}
