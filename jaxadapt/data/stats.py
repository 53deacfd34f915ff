"""How big a corpus is, in the units that matter for training: documents, UTF-8 bytes, words, tokens.

It streams the source through the same readers as training, so what it counts (and what it reports as empty or
invalid UTF-8) is exactly what training would see.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from jaxadapt.data.config import SourceConfig
from jaxadapt.data.documents import Documents
from jaxadapt.data.readers import resolve

_BATCH = 512


def corpus_stats(source: SourceConfig, tokenizer: Any = None) -> Counter:
    """documents, bytes, words (whitespace-separated), tokens (without BOS/EOS; only with a tokenizer),
    empty (skipped) and invalid_utf8 (replaced) counts of one source."""
    docs = Documents(source, resolve(source), role="all", validation_fraction=0.0, epochs=1, shuffle_files=False)
    it = iter(docs)
    out: Counter = Counter()
    batch: list[str] = []

    def count_tokens():
        if tokenizer is not None and batch:
            encs = tokenizer.backend_tokenizer.encode_batch_fast(batch, add_special_tokens=False)
            out["tokens"] += sum(len(e.ids) for e in encs)
        batch.clear()

    for d in it:
        text = d["doc"]
        out["bytes"] += len(text.encode("utf-8"))
        out["words"] += len(text.split())
        batch.append(text)
        if len(batch) == _BATCH:
            count_tokens()
    count_tokens()
    out.update(documents=it.counts["documents"], empty=it.counts["empty"], invalid_utf8=it.counts["invalid_utf8"])
    return out
