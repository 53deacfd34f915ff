"""Auxiliary token vectors for the FOCUS / OMP / KNN initialisations (METHODS.md §2): fastText vectors of the NEW
tokenizer's tokens, trained on target-language text that the new tokenizer split (FOCUS's "fasttext-tokenlevel").

They only have to say which tokens are alike in the target language, so that a new token can be built from old
tokens it resembles; their own values never enter the model. gensim's FastText is used (maintained, wheels for every
Python this project supports; Facebook's `fasttext` bindings are archived and ship no wheel for Python >= 3.11), with
one worker thread and a fixed seed: the same corpus and seed give the same vectors on every run. Its defaults follow
FOCUS: CBOW, 100 dimensions, 10 negative samples, 3 epochs, tokens seen fewer than 10 times get no vector of their
own (fastText still builds one from their character n-grams, which FOCUS uses). The n-grams share 2^18 hash buckets
instead of fastText's 2M: a tokenizer's vocabulary has far fewer n-grams than a word list, and 2M buckets cost
800 MB and most of the time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxadapt.errors import UserError
from jaxadapt.vocab.tokdir import TokenizerDir

DIM, EPOCHS, MIN_COUNT, NEGATIVE, WINDOW, BUCKETS = 100, 3, 10, 10, 5, 2**18
_MAX_SENTENCE = 10_000  # gensim silently truncates longer "sentences"; documents are cut into pieces this long


@dataclass
class AuxVectors:
    """One vector per new token id."""

    vectors: np.ndarray  # [new_size, dim] float32; zeros where `usable` is False
    trained: np.ndarray  # bool [new_size]: the token occurred >= min_count times, so its own vector was trained
    usable: np.ndarray  # bool [new_size]: trained, or given a non-zero vector by its character n-grams
    counts: np.ndarray  # int [new_size]: occurrences in the auxiliary corpus


def token_sentences(new: TokenizerDir, texts: list[str]) -> list[list[str]]:
    """The corpus as lists of new-tokenizer token strings (no special tokens), at most _MAX_SENTENCE long."""
    out = []
    for enc in new.tokenizer.encode_batch(texts, add_special_tokens=False):
        toks = enc.tokens
        out += [toks[i:i + _MAX_SENTENCE] for i in range(0, len(toks), _MAX_SENTENCE)]
    return [s for s in out if s]


def train_aux(new: TokenizerDir, texts: list[str], seed: int = 0, dim: int = DIM, epochs: int = EPOCHS,
              min_count: int = MIN_COUNT) -> AuxVectors:
    """fastText vectors of `new`'s tokens learned from `texts` (deterministic: one thread, seeded)."""
    from gensim.models import FastText

    sentences = token_sentences(new, texts)
    counts = np.zeros(new.size, np.int64)
    for s in sentences:
        for tok in s:
            i = new.vocab.get(tok)
            if i is not None:
                counts[i] += 1
    if not (counts >= min_count).any():
        raise UserError(f"auxiliary corpus: no token of the new tokenizer occurs {min_count} times in its "
                        f"{sum(map(len, sentences))} tokens; give more target-language text (--aux-corpus)")
    model = FastText(vector_size=dim, window=WINDOW, min_count=min_count, sg=0, negative=NEGATIVE, epochs=epochs,
                     bucket=BUCKETS, workers=1, seed=seed, sorted_vocab=1)
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=epochs)
    wv = model.wv
    vectors = np.zeros((new.size, dim), np.float32)
    trained = np.zeros(new.size, bool)
    for i, tok in enumerate(new.tokens):
        if tok is None:
            continue
        trained[i] = tok in wv.key_to_index
        vectors[i] = wv[tok]  # trained tokens: their own vector plus n-grams; others: n-grams alone (or zeros)
    usable = trained | (np.abs(vectors).sum(axis=1) > 0)
    return AuxVectors(vectors, trained, usable, counts)
