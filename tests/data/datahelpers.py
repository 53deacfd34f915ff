"""Synthetic corpora for the data tests (a module of its own: `conftest` is a name every test dir shares)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from jaxadapt.data import build_train_iterator

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
WORDS = ["de", "het", "een", "van", "en", "in", "is", "dat", "op", "te", "zijn", "met", "voor", "niet", "aan", "er", "maar", "om", "ook", "als", "dan", "bij", "nog", "uit", "wordt", "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are", "or", "kaas", "fiets", "gracht", "molen", "sneeuw", "zeeën", "überall", "naïef", "café", "Ölkanne", "пример", "текст"]


def make_docs(n: int, seed: int = 0, min_words: int = 3, max_words: int = 120) -> list[str]:
    """Distinct pseudo-sentences of varied length; each starts with its number so no two are equal."""
    rng = random.Random(seed)
    return [f"doc{seed}-{i} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
            for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def assert_same(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def resume_check(cfg, tokenizer, skip: int, after: int = 4):
    it = build_train_iterator(cfg, tokenizer)
    for _ in range(skip):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(after)]
    it.close()
    again = build_train_iterator(cfg, tokenizer)
    again.set_state(state)
    got = [next(again) for _ in range(after)]
    again.close()
    assert_same(expected, got)
    return expected
