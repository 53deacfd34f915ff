"""One source's documents as a resumable, shardable grain stream.

Why a custom grain source: a corpus may be one 10 GB JSONL file, so it can be neither indexed nor held in memory.
The stream walks the files (in a seeded order per epoch) and keeps its position as a few ints, so a checkpoint
restores by seeking. Sharding is by record: record k of an epoch belongs to shard `k % step == start`, which is
disjoint and complete however the records fall into files; hosts and grain workers compose their slices. Records
that are not ours are skipped unparsed. The validation split is a hash of the document itself, so every run and
every host agrees on it without coordination.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from typing import Any

import grain
import numpy as np

from jaxadapt.data.config import SourceConfig
from jaxadapt.data.readers import FileRef, Reader, describe
from jaxadapt.errors import UserError

log = logging.getLogger("jaxadapt.data")

ROLES = ("train", "validation", "all")


def held_out(doc: Any, fraction: float) -> bool:
    """Whether a document (text or chat record) belongs to the validation split: a hash, stable across runs."""
    if fraction <= 0:
        return False
    key = doc if isinstance(doc, str) else json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64


class Documents(grain.IterDataset):
    """Yields `{"doc": text or record dict, "where": "file:line", "epoch": n}` for one source, role and shard.

    role: "train" (documents outside the validation split), "validation" (inside), "all" (no split).
    epochs: None streams forever, reshuffling the file order each epoch.
    records: yield whole records (chat tasks) instead of the `text_field` string.
    """

    def __init__(self, source: SourceConfig, refs: tuple[FileRef, ...], *, role: str, validation_fraction: float,
                 records: bool = False, seed: int = 0, epochs: int | None = None, shuffle_files: bool = True,
                 max_docs: int | None = None, shard: tuple[int, int] = (0, 1)):
        super().__init__()
        assert role in ROLES, role
        self.source, self.refs, self.role = source, refs, role
        self.validation_fraction, self.records, self.seed = validation_fraction, records, seed
        self.epochs, self.shuffle_files, self.max_docs = epochs, shuffle_files, max_docs
        self.start, self.step = shard

    def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
        """Called by grain inside worker i of n with slice(i, None, n): take every n-th of our own records."""
        del sequential_slice  # records are always dealt round-robin
        self.start += (sl.start or 0) * self.step
        self.step *= sl.step or 1

    def __iter__(self) -> _DocumentsIterator:
        return _DocumentsIterator(self)

    def __str__(self) -> str:
        return f"Documents({self.source.name}, {self.role}, shard {self.start}/{self.step})"


def _identity(refs: tuple[FileRef, ...]) -> dict:
    return {"files": len(refs), "commits": ",".join(sorted({r.commit for r in refs if r.commit}))}


class _DocumentsIterator(grain.DatasetIterator):
    def __init__(self, ds: Documents):
        super().__init__()
        self._ds = ds
        # epoch; file (index into the epoch's order); pos (reader offset); rec (record index in the file);
        # seen (records of the epoch, ours or not: decides ownership); kept (documents yielded this epoch)
        # files, commits: what the positions index into, checked on restore (a hub revision may have moved on)
        self._state = {"epoch": 0, "file": 0, "pos": 0, "rec": 0, "seen": 0, "kept": 0, **_identity(ds.refs)}
        self._records = None
        self._reader: Reader | None = None
        self._at_open: Counter = Counter()
        self._order_of: tuple[int, np.ndarray] = (-1, np.arange(0))
        self.counts: Counter = Counter()  # documents, empty, invalid_utf8, other_split (diagnostics, not state)

    def _order(self, epoch: int) -> np.ndarray:
        """The epoch's file order (seeded, so a restored iterator walks the same one)."""
        if self._order_of[0] != epoch:
            n = len(self._ds.refs)
            rng = np.random.default_rng([self._ds.seed, epoch])
            self._order_of = (epoch, rng.permutation(n) if self._ds.shuffle_files else np.arange(n))
        return self._order_of[1]

    def __next__(self) -> dict:
        ds, st = self._ds, self._state
        while True:
            if ds.epochs is not None and st["epoch"] >= ds.epochs:
                raise StopIteration
            if ds.max_docs is not None and st["kept"] >= ds.max_docs:
                raise StopIteration
            order = self._order(st["epoch"])
            if st["file"] >= len(order):
                self._end_epoch()
                continue
            if self._records is None:
                self._reader = Reader(ds.refs[order[st["file"]]], ds.source, ds.records)
                self._records = self._reader.records(st["pos"])
                self._at_open = Counter(self.counts)
            try:
                pos, raw = next(self._records)
            except StopIteration:
                self._end_file()
                continue
            rec, seen = st["rec"], st["seen"]
            st.update(pos=pos, rec=rec + 1, seen=seen + 1)
            if seen % ds.step != ds.start:
                continue
            doc = self._keep(raw, rec)
            if doc is not None:
                st["kept"] += 1
                return {"doc": doc, "where": self._reader.where(rec), "epoch": st["epoch"]}

    def _keep(self, raw: Any, rec: int) -> Any:
        ds = self._ds
        parsed = self._reader.parse(raw, rec)
        if parsed.invalid_utf8:
            self.counts["invalid_utf8"] += 1
        doc = parsed.value
        if not doc or (isinstance(doc, str) and not doc.strip()):
            self.counts["empty"] += 1
            return None
        if ds.role != "all" and held_out(doc, ds.validation_fraction) != (ds.role == "validation"):
            self.counts["other_split"] += 1
            return None
        self.counts["documents"] += 1
        return doc

    def _end_file(self) -> None:
        st = self._state
        bad, empty = (self.counts[k] - self._at_open[k] for k in ("invalid_utf8", "empty"))
        if st["epoch"] == 0 and (bad or empty):
            log.warning("data source %r, %s: %d documents with invalid UTF-8 (replaced by U+FFFD), %d empty "
                        "documents skipped", self._ds.source.name, self._reader.ref.path, bad, empty)
        st.update(file=st["file"] + 1, pos=0, rec=0)
        self._records = None

    def _end_epoch(self) -> None:
        ds, st = self._ds, self._state
        if ds.epochs is None and st["kept"] == 0:  # an endless stream with nothing in it would spin forever
            shard = f" in shard {ds.start} of {ds.step}" if ds.step > 1 else ""
            raise UserError(
                f"data source {ds.source.name!r}: no {ds.role} documents{shard} in {describe(ds.refs)} "
                f"({self.counts['empty']} empty, {self.counts['other_split']} held out for validation"
                f"{', ' + str(self.counts['invalid_utf8']) + ' with invalid UTF-8' if self.counts['invalid_utf8'] else ''})")
        st.update(epoch=st["epoch"] + 1, file=0, pos=0, rec=0, seen=0, kept=0)

    def get_state(self) -> dict:
        return dict(self._state)

    def set_state(self, state: dict) -> None:
        now = _identity(self._ds.refs)
        if "files" in state and (state["files"], state["commits"]) != (now["files"], now["commits"]):
            name, was = self._ds.source.name, state["commits"] or "local files"
            raise UserError(
                f"data source {name!r}: the checkpoint's position is in {state['files']} files ({was}), the source "
                f"now resolves to {now['files']} ({now['commits'] or 'local files'}), so training cannot resume "
                "where it stopped; pin hf_revision to the checkpoint's commit, or restore the files")
        self._state = {**state, **now}
        self._records = None

    def __str__(self) -> str:
        return f"DocumentsIterator({self._ds})"
