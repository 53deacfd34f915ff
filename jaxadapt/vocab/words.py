"""Count a corpus's words as a tokenizer's model sees them: after its normaliser and pre-tokeniser.

BPE merges never cross these boundaries, so word counts are all that learning merges needs. SentencePiece-style
pipelines may hand the model a whole `▁`-joined line (Metaspace with split=False, or the legacy Prepend+Replace
normaliser); SentencePiece itself learns pieces within words, so those are cut before every `▁` here.
"""

from __future__ import annotations

import re
from collections import Counter

from jaxadapt.vocab.surface import METASPACE, SPACE, style
from jaxadapt.vocab.tokdir import TokenizerDir

_WORD = re.compile(f"{SPACE}[^{SPACE}]*|[^{SPACE}]+")


def word_counts(tok: TokenizerDir, texts) -> Counter:
    """word (in the model's alphabet: `Ġ`/`▁` for spaces) -> occurrences in texts."""
    t = tok.tokenizer
    split_spaces = style(tok.spec) == METASPACE
    counts: Counter = Counter()
    for text in texts:
        s = t.normalizer.normalize_str(text) if t.normalizer is not None else text
        pieces = [p for p, _ in t.pre_tokenizer.pre_tokenize_str(s)] if t.pre_tokenizer is not None else [s]
        if split_spaces:
            pieces = [w for p in pieces for w in _WORD.findall(p)]
        counts.update(pieces)
    return counts
