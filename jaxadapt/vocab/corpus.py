"""Read the text corpora that tokenizers are trained, extended and measured on.

Formats by file name: `.jsonl` / `.ndjson` (one JSON object per line with a string `text` field; each is a document)
or plain text (each non-empty line is a document), either optionally `.gz`; or `debian:LANG`, a cached Debian
corpus. A corpus that is missing or holds no text is an error before any work starts.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from jaxadapt.errors import UserError
from jaxadapt.io.jsonl import json_object


class CorpusError(UserError):
    """A corpus file that is missing, unreadable, malformed or empty."""


def read_corpus(path, max_bytes: int | None = None) -> list[str]:
    """The documents of one corpus file, in order, at most about `max_bytes` of UTF-8 text."""
    if str(path).startswith("debian:"):
        from jaxadapt.data.split import corpus_path

        path = corpus_path(str(path))
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"corpus {p}: no such file")
    is_json = re.search(r"\.(jsonl|ndjson)(\.gz)?$", p.name) is not None
    opener = gzip.open if p.name.endswith(".gz") else open
    docs, size = [], 0
    try:
        with opener(p, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                text = _json_text(line, p, lineno) if is_json else line.rstrip("\n")
                if not text or not text.strip():
                    continue
                docs.append(text)
                size += len(text.encode())
                if max_bytes is not None and size >= max_bytes:
                    break
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise CorpusError(f"corpus {p}: cannot read it as UTF-8 text ({e})") from None
    if not docs:
        raise CorpusError(f"corpus {p}: holds no text")
    return docs


def read_corpora(paths, max_bytes: int | None = None) -> list[str]:
    """The documents of several corpus files; each must hold text."""
    paths = list(paths)
    if not paths:
        raise CorpusError("no corpus given (pass --corpus PATH)")
    return [doc for p in paths for doc in read_corpus(p, max_bytes)]


def _json_text(line: str, path: Path, lineno: int) -> str | None:
    if not line.strip():
        return None
    text = json_object(line, f"corpus {path}, line {lineno}", CorpusError).get("text")
    if not isinstance(text, str):
        raise CorpusError(f"corpus {path}, line {lineno}: expected an object with a string 'text' field")
    return text
