"""Find a source's files and stream their raw records from any position, without loading a file into memory.

A reader yields `(next_pos, raw)`: `next_pos` is an int from which reading resumes after `raw` (a decompressed byte
offset for text and JSONL, a row index for Parquet and HF datasets), so an iterator's checkpoint stays a few ints.
`raw` is cheap to skip: text stays undecoded bytes until `parse` runs, which only the shard that owns it calls.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jaxadapt.data import hub
from jaxadapt.data.config import SourceConfig
from jaxadapt.errors import UserError
from jaxadapt import fs
from jaxadapt.io.jsonl import json_object

MAX_FILE_DOC_BYTES = 64 << 20  # doc_split="file" reads a file whole: refuse what should be streamed instead
_ROWS = 1024
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class FileRef:
    path: str
    format: str  # text | jsonl | parquet | hf
    commit: str | None = None  # the hub commit a hub dataset's file was resolved at


@dataclass
class Parsed:
    """One decoded record: a document's text (pretrain) or the whole record (chat tasks)."""

    value: Any
    invalid_utf8: bool = False


def resolve(source: SourceConfig) -> tuple[FileRef, ...]:
    """Expand the source's paths (files, dirs, globs, URLs, hub datasets) into an ordered, duplicate-free file list."""
    refs: dict[str, FileRef] = {}
    for pattern in source.paths:
        if pattern.startswith("hf://"):
            repo, rev, files = hub.parse_url(pattern)
            _add_hub(refs, source, _hub_files(source, repo, rev or source.hf_revision, (files,)))
            continue
        expanded = pattern if fs.is_url(pattern) else os.path.expanduser(pattern)
        if fs.has_magic(expanded):
            matches = fs.glob(expanded)
            if not matches:
                raise UserError(f"data source {source.name!r}: glob {pattern!r} matched no files")
        elif fs.exists(expanded):
            matches = [expanded]
        elif source.format == "hf" and fs.is_hub_id(pattern):
            _add_hub(refs, source, _hub_files(source, pattern, source.hf_revision, source.hf_data_files))
            continue
        else:
            hub_hint = " (a hub dataset id needs format: hf)" if fs.is_hub_id(pattern) else ""
            raise UserError(f"data source {source.name!r}: no such file or directory: {pattern}{hub_hint}")
        for match in matches:
            for path in [match] if source.format == "hf" else _walk(match):  # an HF dir is one dataset
                refs.setdefault(path, FileRef(path, _format(path, source)))
    if not refs:
        raise UserError(f"data source {source.name!r}: {', '.join(source.paths)} holds no data files")
    for ref in refs.values():
        if not fs.is_url(ref.path) and os.path.exists(ref.path) and not os.access(ref.path, os.R_OK):
            raise UserError(f"data source {source.name!r}: cannot read {ref.path} (permission denied)")
    return tuple(refs.values())


def _hub_files(source: SourceConfig, repo: str, revision: str | None, data_files: tuple[str, ...]) -> hub.HubFiles:
    return hub.resolve(repo, what=f"data source {source.name!r}", name=source.hf_name, split=source.hf_split,
                       data_files=data_files, revision=revision, streaming=source.hf_streaming)


def _add_hub(refs: dict[str, FileRef], source: SourceConfig, files: hub.HubFiles) -> None:
    """A hub dataset's files, each read by its own format (a repo may mix Parquet and JSONL)."""
    for path in files.paths:
        fmt = source.format if source.format not in ("auto", "hf") else _by_name(path)
        if fmt is None:
            raise UserError(f"data source {source.name!r}: {path} of hub dataset {files.repo} is neither Parquet, "
                            "JSONL nor text (.txt); narrow hf_data_files to the files to read")
        refs.setdefault(path, FileRef(path, fmt, files.commit))


def _is_saved_hf(path: str) -> bool:
    return not fs.is_url(path) and os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f)) for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def _walk(path: str) -> list[str]:
    if not fs.isdir(path) or _is_saved_hf(path):
        return [path]
    return fs.walk(path)


def _by_name(path: str) -> str | None:
    name = os.path.basename(path).lower()
    if re.search(r"\.(jsonl|ndjson)(\.gz|\.zst)?$", name):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text" if re.search(r"\.txt(\.gz|\.zst)?$", name) else None


def _format(path: str, source: SourceConfig) -> str:
    if source.format != "auto":
        return source.format
    if _is_saved_hf(path):
        return "hf"
    return _by_name(path) or "text"


@contextlib.contextmanager
def open_binary(path: str, pos: int = 0) -> Iterator[io.BufferedIOBase]:
    """A plain, .gz or .zst file (local or a URL) as decompressed bytes, at decompressed offset `pos`."""
    with fs.open_read(path) as raw:
        try:
            if path.endswith(".gz"):
                f = gzip.GzipFile(fileobj=raw, mode="rb")
            elif path.endswith(".zst"):
                import zstandard

                z = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
                z.seek(pos)  # forward only: decompresses and drops what lies before `pos`
                f = io.BufferedReader(z)
            else:
                f = raw
            if pos and not path.endswith(".zst"):
                f.seek(pos)
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror or e}") from None
        with f:
            yield f


def _read_errors() -> tuple[type[BaseException], ...]:
    """What broken, truncated or unreadable files raise while being read."""
    import pyarrow
    import zstandard

    return OSError, EOFError, zlib.error, zstandard.ZstdError, pyarrow.ArrowException


def decode(raw: bytes) -> tuple[str, bool]:
    """UTF-8 text; invalid bytes become U+FFFD and are reported through the flag, never raised."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


def _clean(text: str) -> tuple[str, bool]:
    """JSON may carry lone surrogates (\\ud800): the tokenizer cannot encode them, so they count as invalid."""
    if _SURROGATES.search(text):
        return _SURROGATES.sub("\ufffd", text), True
    return text, False


class Reader:
    """Reads one file's records for one source and turns an owned raw record into text or a record dict."""

    def __init__(self, ref: FileRef, source: SourceConfig, want_records: bool):
        self.ref, self.source, self.want_records = ref, source, want_records

    def records(self, pos: int) -> Iterator[tuple[int, Any]]:
        """(next_pos, raw record) from `pos` on; a file that fails to read or decompress is an error naming it."""
        fmt, split = self.ref.format, self.source.doc_split
        if fmt == "jsonl" or (fmt == "text" and split == "line"):
            gen = self._lines(pos)
        elif fmt == "text":
            gen = self._whole(pos) if split == "file" else self._blocks(pos)
        else:
            gen = self._parquet(pos) if fmt == "parquet" else self._hf(pos)
        try:
            yield from gen
        except _read_errors() as e:
            raise UserError(f"cannot read {self.ref.path}: {e}") from None

    def parse(self, raw: Any, rec: int) -> Parsed:
        """`rec` is the 0-based record index in the file, used to name the line/row in errors."""
        fmt = self.ref.format
        if fmt == "text":
            return Parsed(*decode(raw))
        if fmt == "jsonl":
            text, bad = decode(raw)
            if not text.strip():
                return Parsed("", bad)
            raw = json_object(text, self.where(rec))
        else:
            bad = False
        if self.want_records:
            return Parsed(raw, bad)
        field = self.source.text_field
        if field not in raw:
            raise UserError(f"{self.where(rec)}: no field {field!r} (fields: {', '.join(map(str, raw)) or 'none'}); "
                            f"set text_field of source {self.source.name!r}")
        value = raw[field]
        if value is None:
            return Parsed("", bad)
        if not isinstance(value, str):
            raise UserError(f"{self.where(rec)}: field {field!r} must be a string, got {type(value).__name__}")
        text, bad2 = _clean(value)
        return Parsed(text, bad or bad2)

    def where(self, rec: int) -> str:
        """Where record `rec` lives, as a person would look it up: file:line, a block or a row."""
        path, fmt = self.ref.path, self.ref.format
        if fmt == "jsonl" or (fmt == "text" and self.source.doc_split == "line"):
            return f"{path}:{rec + 1}"
        if fmt == "text":
            return path if self.source.doc_split == "file" else f"{path} (block {rec + 1})"
        return f"{path} (row {rec})"

    # --- formats ---

    def _whole(self, pos: int) -> Iterator[tuple[int, bytes]]:
        if pos:
            return
        with open_binary(self.ref.path) as f:
            data = f.read(MAX_FILE_DOC_BYTES + 1)
        if len(data) > MAX_FILE_DOC_BYTES:
            raise UserError(f"{self.ref.path}: more than {MAX_FILE_DOC_BYTES >> 20} MiB is too large to be one "
                            f"document; set doc_split of source {self.source.name!r} to 'blank_line' or 'line'")
        yield 1, data

    def _lines(self, pos: int) -> Iterator[tuple[int, bytes]]:
        with open_binary(self.ref.path, pos) as f:
            for line in f:
                pos += len(line)
                yield pos, line.rstrip(b"\r\n")

    def _blocks(self, pos: int) -> Iterator[tuple[int, bytes]]:
        block: list[bytes] = []
        with open_binary(self.ref.path, pos) as f:
            for line in f:
                pos += len(line)
                if line.strip():
                    block.append(line)
                elif block:
                    yield pos, b"".join(block).rstrip(b"\r\n")
                    block = []
        if block:
            yield pos, b"".join(block).rstrip(b"\r\n")

    def _parquet(self, pos: int) -> Iterator[tuple[int, dict]]:
        """Rows from `pos` on; whole row groups before it are skipped unread (for a URL: never fetched)."""
        import pyarrow.parquet as pq

        with contextlib.ExitStack() as stack:
            path = self.ref.path
            src = stack.enter_context(fs.open_read(path)) if fs.is_url(path) else path
            try:
                pf = stack.enter_context(pq.ParquetFile(src))
            except _read_errors() as e:
                raise UserError(f"cannot read {path} as Parquet: {e}") from None
            yield from self._rows(pf, pos)

    def _rows(self, pf, pos: int) -> Iterator[tuple[int, dict]]:
        columns = None
        if not self.want_records:
            names = pf.schema_arrow.names
            if self.source.text_field not in names:
                raise UserError(f"{self.ref.path}: no column {self.source.text_field!r} (columns: {', '.join(names)}); "
                                f"set text_field of source {self.source.name!r}")
            columns = [self.source.text_field]
        first, row = 0, 0
        for g in range(pf.num_row_groups):  # skip whole row groups before `pos`
            n = pf.metadata.row_group(g).num_rows
            if row + n > pos:
                break
            row += n
            first += 1
        for batch in pf.iter_batches(batch_size=_ROWS, row_groups=range(first, pf.num_row_groups), columns=columns):
            for rec in batch.to_pylist():
                row += 1
                if row > pos:
                    yield row, rec

    def _hf(self, pos: int) -> Iterator[tuple[int, dict]]:
        import datasets

        path, split = self.ref.path, self.source.hf_split
        try:
            if not _is_saved_hf(path):  # a dir of data files for the `datasets` builders: stream it
                stream = datasets.load_dataset(path, split=split, streaming=True)
                yield from enumerate(stream.skip(pos), pos + 1)
                return
            ds = datasets.load_from_disk(path)
        except Exception as e:  # datasets raises many types for missing, offline or broken datasets
            raise UserError(f"cannot load HF dataset {path!r} (split {split!r}): {e}") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise UserError(f"{path}: no split {split!r} (splits: {', '.join(ds)}); set hf_split")
            ds = ds[split]
        if not self.want_records:
            field = self.source.text_field
            if field not in ds.column_names:
                raise UserError(f"{path}: no column {field!r} (columns: {', '.join(ds.column_names)}); "
                                f"set text_field of source {self.source.name!r}")
            ds = ds.select_columns([field])
        table = ds.with_format("arrow")
        for start in range(pos, len(ds), _ROWS):
            yield from enumerate(table[start:start + _ROWS].to_pylist(), start + 1)


def describe(refs: tuple[FileRef, ...]) -> str:
    """The first few paths of a file list, for error messages."""
    return ", ".join(r.path for r in refs[:3]) + (f" and {len(refs) - 3} more" if len(refs) > 3 else "")
