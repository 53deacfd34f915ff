"""Process i of n gets records i, i+n, ...: disjoint and complete, and grain workers subdivide that further."""

from __future__ import annotations

import numpy as np
from datahelpers import make_docs, write_jsonl

from jaxadapt.data import DataConfig, SourceConfig, build_eval_batches, build_train_iterator
from jaxadapt.data.documents import Documents
from jaxadapt.data.readers import resolve

DOCS = make_docs(101, seed=8, max_words=12)


def source(tmp_path) -> SourceConfig:
    write_jsonl(tmp_path / "p1.jsonl", [{"text": d} for d in DOCS[:40]])
    write_jsonl(tmp_path / "p2.jsonl", [{"text": d} for d in DOCS[40:]])
    return SourceConfig("s", (str(tmp_path),))


def shard_docs(src: SourceConfig, shard: tuple[int, int], worker: slice | None = None) -> list[str]:
    ds = Documents(src, resolve(src), role="all", validation_fraction=0.0, epochs=1, seed=3, shard=shard)
    if worker is not None:
        ds.set_slice(worker)
    return [d["doc"] for d in ds]


def test_process_shards_are_disjoint_and_complete(tmp_path):
    src = source(tmp_path)
    for n in (1, 2, 3, 7):
        shards = [shard_docs(src, (i, n)) for i in range(n)]
        flat = [d for s in shards for d in s]
        assert len(flat) == len(set(flat)) and sorted(flat) == sorted(DOCS), n
        assert max(map(len, shards)) - min(map(len, shards)) <= 1, "shards are balanced"


def test_worker_slices_split_a_process_shard(tmp_path):
    src = source(tmp_path)
    mine = shard_docs(src, (1, 2))
    workers = [shard_docs(src, (1, 2), slice(w, None, 3)) for w in range(3)]
    assert sorted(d for w in workers for d in w) == sorted(mine)
    assert sum(map(len, workers)) == len(mine)


def test_processes_get_their_own_rows(tmp_path, tokenizer):
    src = source(tmp_path)
    cfg = DataConfig(sources=(src,), seq_len=16, batch_size=8, shuffle_buffer=8, validation_fraction=0.0)
    batches = []
    for i in range(2):
        it = build_train_iterator(cfg, tokenizer, process_index=i, process_count=2)
        batches.append(next(it))
        it.close()
    assert batches[0]["input_ids"].shape == (4, 16)
    rows = [{tuple(r) for r in b["input_ids"]} for b in batches]
    assert not rows[0] & rows[1]
    assert not np.array_equal(batches[0]["input_ids"], batches[1]["input_ids"])


def test_eval_batches_split_rows_between_processes(tmp_path, tokenizer):
    cfg = DataConfig(sources=(source(tmp_path),), seq_len=16, batch_size=4, validation_fraction=0.5)
    full = build_eval_batches(cfg, tokenizer)["s"]
    parts = [build_eval_batches(cfg, tokenizer, process_index=i, process_count=2)["s"] for i in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(full)
    for whole, a, b in zip(full, *parts):
        for k in whole:
            np.testing.assert_array_equal(whole[k], np.concatenate([a[k], b[k]]))


def test_row_sharding_reproduces_the_single_process_batches(tmp_path, tokenizer):
    """host_sharding="rows": the processes' blocks, stacked, are the batches of one process, step after step."""
    src = source(tmp_path)
    cfg = DataConfig(sources=(src,), seq_len=16, batch_size=8, shuffle_buffer=8, validation_fraction=0.0,
                     host_sharding="rows")
    single = build_train_iterator(cfg, tokenizer)
    parts = [build_train_iterator(cfg, tokenizer, process_index=i, process_count=2) for i in range(2)]
    for _ in range(3):
        whole, blocks = next(single), [next(p) for p in parts]
        for key in whole:
            assert np.array_equal(np.concatenate([b[key] for b in blocks]), whole[key]), key
    for it in (single, *parts):
        it.close()
