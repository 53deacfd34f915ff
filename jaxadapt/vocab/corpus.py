"""Read the text corpora that tokenizers are trained, extended and measured on.

A corpus is whatever a training data source reads (JSONL `text` fields, Parquet, text files with one document per
non-empty line, dirs, globs, `gs://` and `hf://datasets/...` URLs), or `debian:LANG`, a cached Debian corpus. A
corpus that is missing or holds no text is an error before any work starts.
"""

from __future__ import annotations

from jaxadapt.errors import UserError


class CorpusError(UserError):
    """A corpus file that is missing, unreadable, malformed or empty."""


def read_corpus(path, max_bytes: int | None = None) -> list[str]:
    """The documents of one corpus (one per non-empty line of a text file), in order, at most about `max_bytes`
    of UTF-8 text."""
    from jaxadapt.data.split import corpus_name, corpus_path, iter_texts

    spec = str(path)
    docs, size = [], 0
    for text in iter_texts(corpus_name(spec) or "corpus", corpus_path(spec), doc_split="line"):
        docs.append(text)
        size += len(text.encode())
        if max_bytes is not None and size >= max_bytes:
            break
    if not docs:
        raise CorpusError(f"corpus {spec}: holds no text")
    return docs


def read_corpora(paths, max_bytes: int | None = None) -> list[str]:
    """The documents of several corpus files; each must hold text."""
    paths = list(paths)
    if not paths:
        raise CorpusError("no corpus given (pass --corpus PATH)")
    return [doc for p in paths for doc in read_corpus(p, max_bytes)]
