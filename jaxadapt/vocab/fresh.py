"""Train a tokenizer model from scratch on word counts (the tokenizers library's trainers do the work).

Feeding words instead of raw text lets one trainer serve every pipeline: the words were already normalised and
pre-tokenised by the pipeline in question (see words.py), so the trainer only has to split on a separator that
no word contains.
"""

from __future__ import annotations

import json
from collections import Counter

from tokenizers import Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE, Unigram

from jaxadapt.vocab.surface import BYTE_LEVEL, byte_to_char

COVERAGE = 0.9995  # share of character occurrences the alphabet covers (SentencePiece's default); rest: bytes


def alphabet(words: Counter, how: str, coverage: float = COVERAGE) -> list[str]:
    """The characters BPE starts from: all 256 byte characters for byte-level tokenizers, else frequent_chars."""
    return list(byte_to_char().values()) if how == BYTE_LEVEL else frequent_chars(words, coverage)


def frequent_chars(words: Counter, coverage: float = COVERAGE) -> list[str]:
    """The most frequent characters of the words, most frequent first, until they cover `coverage` of all
    occurrences (SentencePiece's character coverage: rarer characters are left to byte fallback)."""
    chars: Counter = Counter()
    for w, n in words.items():
        for c in w:
            chars[c] += n
    total, out, seen = sum(chars.values()), [], 0
    for c, n in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])):
        if seen >= coverage * total:
            break
        out.append(c)
        seen += n
    return out


def train_bpe(words: Counter, vocab_size: int, chars: list[str], min_count: int = 2) -> tuple[dict, list]:
    """(vocab token -> id, merges in learned order) of a BPE over `chars`, at most vocab_size tokens."""
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_count, show_progress=False,
                                  initial_alphabet=chars, limit_alphabet=len(chars))
    model = _train(BPE(), trainer, words)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def train_unigram(words: Counter, vocab_size: int, unk: str, special: list[str]) -> list[tuple[str, float]]:
    """(piece, log-probability) pairs of a Unigram model; `special` come first, unk among them."""
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=special, unk_token=unk,
                                      show_progress=False, max_piece_length=16)
    return [tuple(v) for v in _train(Unigram(), trainer, words)["vocab"]]


def _train(model, trainer, words: Counter) -> dict:
    used = set().union(*map(set, words)) if words else set()
    sep = next(chr(c) for c in range(0xE000, 0xF900) if chr(c) not in used)  # a private-use char no word has
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Split(sep, behavior="removed")
    tok.train_from_iterator((sep.join([w] * n) for w, n in words.items()), trainer, length=len(words))
    return json.loads(tok.to_str())["model"]
