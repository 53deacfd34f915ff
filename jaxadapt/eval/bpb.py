"""Bits per byte and perplexity of a corpus, scored with sliding windows.

Each document becomes one token sequence: a prefix token (the tokenizer's BOS, or its EOS if it has no BOS; as
lm-eval's rolling log-likelihood) followed by the text's tokens without special tokens. Every text token is a
target exactly once, so the bytes the loss covers are exactly the UTF-8 bytes of the text.

A window is `seq_len` input tokens and their `seq_len` next-token targets; windows start every `stride` tokens.
Each target is scored in the first window that holds it: stride == seq_len (the default) gives disjoint windows
(like the training loss), a smaller stride gives overlapping windows in which only the new targets are scored, so
every target after the first window sees at least seq_len - stride tokens of context (HF's perplexity guide).
Windows never cross documents.

    bpb = total NLL (nats) / (UTF-8 bytes of the texts * ln 2)        ppl = exp(total NLL / scored tokens)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from jaxadapt.errors import UserError
from jaxadapt.eval.scorer import Row, Scorer


def prefix_id(tokenizer: Any) -> int:
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise UserError("the tokenizer has neither a BOS nor an EOS token: nothing to condition a document's first "
                        "token on")
    return tid


def windows(tokens: list[int], seq_len: int, stride: int) -> list[Row]:
    """The windows of one token sequence (prefix included); targets are tokens[1:]."""
    if not 1 <= stride <= seq_len:
        raise UserError(f"--stride {stride}: expected 1 <= stride <= --seq-len ({seq_len})")
    tokens = np.asarray(tokens, np.int32)
    last = len(tokens) - 1  # number of targets
    rows, begin, done = [], 0, 0
    while done < last:
        end = min(begin + seq_len, last)
        rows.append((tokens[begin:end], tokens[begin + 1:end + 1], np.arange(begin, end) >= done))
        done, begin = end, begin + stride
    return rows


def corpus_bpb(scorer: Scorer, tokenizer: Any, texts: Iterable[str], seq_len: int, stride: int | None = None,
               name: str = "corpus") -> dict:
    """{docs, tokens, bytes, nll, bpb, ppl, seq_len, stride} of the non-empty texts."""
    stride = stride or seq_len
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError(f"--bpb {name}: no non-empty text to score")
    first = prefix_id(tokenizer)
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rows = [w for ids in encoded for w in windows([first, *ids], seq_len, stride)]
    nll = -float(scorer.logprobs(rows, desc=f"bpb {name}").sum())
    tokens = sum(len(ids) for ids in encoded)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"docs": len(texts), "tokens": tokens, "bytes": nbytes, "nll": nll, "bpb": nll / nbytes / math.log(2),
            "ppl": math.exp(nll / tokens), "seq_len": seq_len, "stride": stride}
