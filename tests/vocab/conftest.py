"""Fixtures of the vocab tests: real tokenizers (SmolLM2, Mistral), real Dutch and English text, built once."""

from __future__ import annotations

import json

import pytest
from vocabhelpers import mistral_tokenizer_dir

TRAIN_BYTES = 1_500_000  # Dutch text the extensions learn from; held-out text comes from the corpus's end


def _docs(lang: str) -> list[str]:
    from jaxadapt.data.debian import corpus

    return [json.loads(line)["text"] for line in corpus(lang).open(encoding="utf-8")]


@pytest.fixture(scope="session")
def dutch():
    """(train, held_out): disjoint Dutch documents."""
    docs = _docs("nl")
    held = docs[-300:]
    train, size = [], 0
    for d in docs[:-300]:
        train.append(d)
        size += len(d.encode())
        if size >= TRAIN_BYTES:
            break
    return train, held


@pytest.fixture(scope="session")
def english():
    return _docs("en")[-300:]


@pytest.fixture(scope="session")
def german():
    """(protect, held_out): disjoint German documents (LibreOffice help), for the protected extension."""
    docs = _docs("de")
    return docs[:2000], docs[-300:]


@pytest.fixture(scope="session")
def smollm2_tok_dir():
    from jaxadapt.assets import smollm2_dir

    return smollm2_dir()


@pytest.fixture(scope="session")
def smollm2_hf_tok(smollm2_tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tok_dir)


@pytest.fixture(scope="session")
def mistral_dir():
    return mistral_tokenizer_dir()


@pytest.fixture(scope="session")
def smollm2_ext(smollm2_tok_dir, dutch, tmp_path_factory):
    """SmolLM2's tokenizer extended by 1K and 5K tokens learned on Dutch, written as tokenizer dirs."""
    from jaxadapt.vocab import extend, read_tokenizer, write_tokenizer_dir

    base = read_tokenizer(smollm2_tok_dir)
    out = {}
    for n in (1000, 5000):
        tok = extend(base, dutch[0], n)
        origin = {"mode": "extend", "base": str(smollm2_tok_dir), "base_fingerprint": base.fingerprint()}
        out[n] = write_tokenizer_dir(tmp_path_factory.mktemp(f"smollm2_plus{n}"), tok, origin)
    return out
