"""The two entry points the trainer calls: an endless, resumable training iterator and fixed evaluation batches.

Per source: documents (streamed, sharded, validation held out) -> window shuffle -> batched tokenization ->
packing (concatenate-and-split for pretraining, first-fit for SFT; DPO rows are not packed). Sources are then
mixed per packed row with grain's deterministic weighted mix, so the weights are shares of training tokens.
Rows are batched per process; with `num_workers` the whole chain runs in grain worker processes, each on its own
slice of every source, otherwise a background thread keeps `prefetch` batches ready.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import weakref
import zlib
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
from grain import experimental as gx

from jaxadapt.data.chat import EncodeChats, EncodePreferences
from jaxadapt.data.config import DataConfig, SourceConfig
from jaxadapt.data.documents import Documents
from jaxadapt.data.readers import resolve
from jaxadapt.data.shuffle import WindowShuffle
from jaxadapt.data.state import from_json, to_json
from jaxadapt.data.tokenize import EncodeDocuments
from jaxadapt.errors import UserError

Batch = dict[str, np.ndarray]


class DataIterator(Iterator[Batch]):
    """Training batches forever; `get_state()` is plain JSON for the checkpoint, `set_state()` resumes exactly."""

    def __init__(self, ds: grain.IterDataset, fingerprint: dict):
        # The grain iterator lives in a box that closing empties: grain's prefetchers must be closed and freed
        # while the interpreter is intact (at exit at the latest); their own __del__ fails during teardown.
        self._box = [iter(ds)]
        self._fingerprint = fingerprint
        self._closer = weakref.finalize(self, _close, self._box)

    @property
    def _it(self) -> grain.DatasetIterator:
        if not self._box:
            raise ValueError("data: the iterator is closed")
        return self._box[0]

    def __next__(self) -> Batch:
        # copies: worker batches arrive in shared memory, which grain frees only when the array object dies
        return {k: np.array(v) for k, v in next(self._it).items()}

    def get_state(self) -> dict:
        return {"fingerprint": self._fingerprint, "grain": to_json(self._it.get_state())}

    def set_state(self, state: dict) -> None:
        saved = state.get("fingerprint", {})
        changed = sorted(k for k in set(saved) | set(self._fingerprint) if saved.get(k) != self._fingerprint.get(k))
        if changed:
            raise UserError("data: the saved iterator state was made by a different data pipeline (" + "; ".join(
                f"{k}: saved {saved.get(k)!r}, now {self._fingerprint.get(k)!r}" for k in changed) + ")")
        self._it.set_state(from_json(state["grain"]))

    def close(self) -> None:
        """Stop prefetch threads and worker processes."""
        self._closer()


def _close(box: list) -> None:
    if box:
        box.pop().close()


def build_train_iterator(cfg: DataConfig, tokenizer: Any, *, seq_len: int | None = None,
                         global_batch: int | None = None, process_index: int = 0,
                         process_count: int = 1) -> DataIterator:
    """This process's share of every global batch: `global_batch / process_count` rows of `seq_len` tokens.

    With host_sharding "records", process i of n reads records i, i+n, i+2n, ... of each source, so hosts see
    disjoint data and together all of it; with "rows" every process packs the whole stream and keeps rows
    [i*B/n, (i+1)*B/n) of each global batch, the batches of a single-process run. Batches follow the contract in `jaxadapt.data` (DPO: `chosen_*` and `rejected_*` fields).
    """
    seq_len, global_batch = seq_len or cfg.seq_len, global_batch or cfg.batch_size
    if not cfg.sources:
        raise UserError("data: no sources configured")
    if not 0 <= process_index < process_count or global_batch % process_count:
        raise UserError(f"data: global batch {global_batch} must split evenly over {process_count} processes "
                        f"(process_index {process_index})")
    by_rows = cfg.host_sharding == "rows"
    shard = (0, 1) if by_rows else (process_index, process_count)
    rows = {s.name: _rows(cfg, s, tokenizer, seq_len=seq_len, role="train", shard=shard) for s in cfg.sources}
    ds = rows[cfg.sources[0].name] if len(rows) == 1 else grain.IterDataset.mix(
        rows, {s.name: s.weight for s in cfg.sources})
    per = global_batch // process_count
    if by_rows:
        ds = ds.batch(global_batch, drop_remainder=True).map(
            functools.partial(_block, lo=process_index * per, hi=(process_index + 1) * per))
    else:
        ds = ds.batch(per, drop_remainder=True)
    if cfg.num_workers:
        _absl_flags_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers,
                                                         per_worker_buffer_size=max(cfg.prefetch, 1)),
                            worker_init_fn=_absl_flags_parsed)
    elif cfg.prefetch:
        ds = gx.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=cfg.prefetch)
    return DataIterator(ds, _fingerprint(cfg, seq_len=seq_len, batch_size=global_batch, process_index=process_index,
                                         process_count=process_count))


def _block(batch: Batch, lo: int, hi: int) -> Batch:
    """This process's rows of a global batch (host_sharding="rows")."""
    return {k: v[lo:hi] for k, v in batch.items()}


def _fingerprint(cfg: DataConfig, **actual: int) -> dict:
    """Everything that decides the batch sequence, as JSON. Paths are left out (a corpus may move between
    machines), and so is `prefetch` (it changes timing only)."""
    fp = dataclasses.asdict(cfg)
    del fp["prefetch"]
    for source in fp["sources"]:
        del source["paths"]
    return json.loads(json.dumps({**fp, **actual}))


def build_eval_batches(cfg: DataConfig, tokenizer: Any, *, seq_len: int | None = None, batch_size: int | None = None,
                       process_index: int = 0, process_count: int = 1) -> dict[str, list[Batch]]:
    """Each source's held-out documents, packed and batched once (the last batch padded with empty rows).

    Besides the contract fields a batch has `num_bytes` [B]: UTF-8 bytes of the documents whose last target is in
    that row (SFT: of their assistant replies), so over all batches of a source
    bits/byte = sum(NLL over loss_mask) / (ln 2 * sum(num_bytes)). With process_count > 1 each process gets its
    rows of every (global) batch. Sources with validation_fraction 0 have no validation set: returns {}.
    """
    seq_len, batch_size = seq_len or cfg.seq_len, batch_size or cfg.batch_size
    if cfg.validation_fraction == 0:
        return {}
    if batch_size % process_count:
        raise UserError(f"data: eval batch {batch_size} must split evenly over {process_count} processes")
    out = {}
    for source in cfg.sources:
        ds = _rows(cfg, source, tokenizer, seq_len=seq_len, role="validation", shard=(0, 1))
        batches = list(ds.batch(batch_size))
        if not batches:
            raise _no_validation(cfg, source)
        last = batches[-1]
        missing = batch_size - len(next(iter(last.values())))
        batches[-1] = {k: np.concatenate([v, np.zeros((missing, *v.shape[1:]), v.dtype)]) for k, v in last.items()}
        per = batch_size // process_count
        out[source.name] = [{k: v[process_index * per:(process_index + 1) * per] for k, v in b.items()}
                            for b in batches]
    return out


def _no_validation(cfg: DataConfig, source: SourceConfig) -> UserError:
    """Why a source yields no validation batch: it has no documents at all, or none fell in the held-out share."""
    it = iter(Documents(source, resolve(source), role="all", validation_fraction=0.0, records=cfg.task != "pretrain",
                        epochs=1, shuffle_files=False))
    total = sum(1 for _ in it)
    where = f"data source {source.name!r} ({', '.join(source.paths)})"
    if not total:
        return UserError(f"{where}: no documents ({it.counts['empty']} empty); expected non-blank text")
    return UserError(f"{where}: none of its {total} documents falls in the validation share "
                     f"(data.validation_fraction={cfg.validation_fraction}); raise it, or set it to 0 to train "
                     "without validation")


def _rows(cfg: DataConfig, source: SourceConfig, tokenizer: Any, *, seq_len: int, role: str,
          shard: tuple[int, int]) -> grain.IterDataset:
    """One source's packed rows; training streams forever in a seeded order, validation reads once in order."""
    train = role == "train"
    seed = (cfg.seed * 1_000_003 + zlib.crc32(source.name.encode())) % 2**31  # adding a source changes no other
    ds: grain.IterDataset = Documents(
        source, resolve(source), role=role, validation_fraction=cfg.validation_fraction,
        records=cfg.task != "pretrain", seed=seed, epochs=None if train else 1, shuffle_files=train,
        max_docs=None if train else cfg.validation_max_docs or None, shard=shard)
    if train:
        ds = WindowShuffle(ds, window=cfg.shuffle_buffer, seed=seed, key=operator.itemgetter("epoch"))
    ds = ds.batch(cfg.tokenize_batch, batch_fn=list)
    if cfg.task == "dpo":
        return gx.FlatMapIterDataset(ds, EncodePreferences(tokenizer, seq_len=seq_len, batch=cfg.tokenize_batch))
    if cfg.task == "sft":
        ds = gx.FlatMapIterDataset(ds, EncodeChats(tokenizer, seq_len=seq_len, batch=cfg.tokenize_batch,
                                                    with_bytes=not train))
        ds = gx.FirstFitPackIterDataset(ds, length_struct=_lengths(seq_len, train), num_packing_bins=cfg.packing_bins,
                                        seed=seed, shuffle_bins=train)
    else:
        ds = gx.FlatMapIterDataset(ds, EncodeDocuments(tokenizer, cfg.bos, cfg.eos, batch=cfg.tokenize_batch,
                                                        with_bytes=not train))
        ds = gx.ConcatThenSplitIterDataset(ds, length_struct=_lengths(seq_len, train))
    return ds.map(_finish)


def _lengths(seq_len: int, train: bool) -> dict[str, int]:
    names = ("input_ids", "targets", "loss_mask") + (() if train else ("num_bytes",))
    return {name: seq_len for name in names}


def _finish(ex: dict) -> Batch:
    """A packed row in the contract's names and dtypes; padding never counts."""
    seg = ex["input_ids_segment_ids"].astype(np.int32)
    row = {"input_ids": ex["input_ids"].astype(np.int32), "targets": ex["targets"].astype(np.int32),
           "segment_ids": seg, "positions": ex["input_ids_positions"].astype(np.int32),
           "loss_mask": ((ex["loss_mask"] != 0) & (seg > 0)).astype(np.float32)}
    if "num_bytes" in ex:
        row["num_bytes"] = np.int64(ex["num_bytes"].sum())
    return row


def _absl_flags_parsed(*_worker: int) -> None:
    """grain's multiprocessing reads absl flags, here and in its spawned workers, which nobody parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
