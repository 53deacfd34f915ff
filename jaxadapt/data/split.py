"""Corpus specs and held-out splits shared by `jaxadapt data split`, the quickstart and the experiments.

The held-out split is the trainer's own document hash (`data.validation_fraction`), so a run that trains on the
whole corpus with the same fraction never sees a held-out document, and a tokenizer learned on `train.jsonl`
never saw them either.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

from jaxadapt.data.config import SourceConfig
from jaxadapt.data.documents import Documents, held_out
from jaxadapt.data.readers import resolve
from jaxadapt.errors import UserError
from jaxadapt import fs
from jaxadapt.io.atomic import atomic_dir


def corpus_path(spec: str) -> str:
    """`debian:LANG` (the cached Debian corpus, fetched on first use), a URL (`gs://`, `hf://datasets/...`, read
    as a data source reads it) or an existing file/dir."""
    if spec.startswith("debian:"):
        from jaxadapt.data.debian import corpus

        return str(corpus(spec.split(":", 1)[1]))
    if not fs.is_url(spec) and not fs.exists(spec):
        from jaxadapt.data.debian import PACKAGES

        raise UserError(f"corpus {spec!r}: no such file or directory (or use debian:LANG, LANG one of "
                        f"{', '.join(PACKAGES)})")
    return spec


def corpus_name(path: str) -> str:
    """A short name for a corpus path: its file name without the extension."""
    return Path(path.rstrip("/")).stem


def iter_texts(name: str, path: str, doc_split: str = "file") -> Iterator[str]:
    """The documents of a file, dir, glob or URL, streamed in order as a data source reads them (JSONL `text`
    field, Parquet, text files cut by `doc_split`)."""
    source = SourceConfig(name=name, paths=(str(path),), doc_split=doc_split)
    for d in Documents(source, resolve(source), role="all", validation_fraction=0.0, epochs=1, shuffle_files=False):
        yield d["doc"]


def read_texts(name: str, path: str, max_docs: int = 0) -> list[str]:
    """The first `max_docs` documents (0: all) of `iter_texts`."""
    return list(itertools.islice(iter_texts(name, path), max_docs or None))


def split_texts(texts: list[str], fraction: float, max_heldout: int = 0) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents); at most `max_heldout` held out (0: all in the split), the rest
    of the split is dropped rather than trained on, so the held-out set stays a subset of the trainer's."""
    held = [t for t in texts if held_out(t, fraction)]
    if not held:
        raise UserError(f"no document falls in the held-out split at fraction={fraction}; raise it")
    return [t for t in texts if not held_out(t, fraction)], held[:max_heldout] if max_heldout else held


def write_jsonl(fh, texts: list[str]) -> None:
    """One `{"text": ...}` record per line into an open text file."""
    fh.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def split_corpus(spec: str, out: str | Path, fraction: float, max_heldout: int = 0) -> dict:
    """Write out/train.jsonl and out/heldout.jsonl (atomically, as one dir); returns their document counts."""
    if not 0 < fraction < 1:
        raise UserError(f"--heldout-fraction={fraction}: expected a number between 0 and 1")
    path = corpus_path(spec)
    train, held = split_texts(read_texts(corpus_name(path), path), fraction, max_heldout)
    with atomic_dir(out) as tmp:
        for name, texts in (("train", train), ("heldout", held)):
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                write_jsonl(fh, texts)
        (tmp / "split.json").write_text(json.dumps(
            {"source": str(path), "heldout_fraction": fraction, "max_heldout": max_heldout,
             "train_docs": len(train), "heldout_docs": len(held)}, indent=2) + "\n")
    return {"train": len(train), "heldout": len(held)}
