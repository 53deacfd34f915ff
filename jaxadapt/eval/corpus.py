"""The documents of an eval corpus, capped in one place so that --bpb, --target, --source and --other corpora are
read and cut the same way: a data source's reader, at most --max-docs documents, then at most --max-bytes bytes."""

from __future__ import annotations

from collections.abc import Iterable

from jaxadapt.errors import UserError


def cap_bytes(texts: Iterable[str], max_bytes: int) -> list[str]:
    """The non-blank documents in order until `max_bytes` UTF-8 bytes (0: all). The last one is cut at a character
    boundary, so the total is <= max_bytes and equals it unless a multi-byte character straddles the cap. Blank
    documents are dropped first: they score no bytes, so they must not use up the budget either."""
    texts = [t for t in texts if t.strip()]
    if not max_bytes:
        return texts
    out, left = [], max_bytes
    for text in texts:
        raw = text.encode("utf-8")
        if len(raw) >= left:
            cut = raw[:left].decode("utf-8", "ignore")  # drops only the partial character at the end
            return out + [cut] if cut.strip() else out
        out.append(text)
        left -= len(raw)
    return out


def read_corpus(option: str, name: str, path: str, max_docs: int = 0, max_bytes: int = 0) -> list[str]:
    """The texts to score of one NAME=PATH corpus option (PATH may be debian:LANG, e.g. debian:nl-eval, fetched on
    first use); errors name the option and the corpus."""
    from jaxadapt.data.split import corpus_path, read_texts

    if max_bytes < 0:
        raise UserError(f"--max-bytes {max_bytes}: expected >= 0 (0: all)")
    try:
        texts = cap_bytes(read_texts(name, corpus_path(str(path)), max_docs), max_bytes)
    except UserError as e:
        raise UserError(f"{option} {name}: {e}") from None
    if not texts:
        raise UserError(f"{option} {name}: no non-empty text to score in {path}")
    return texts
