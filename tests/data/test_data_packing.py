"""Packing keeps every (input, target) pair exactly once, with segment ids and positions that restart per document."""

from __future__ import annotations

import numpy as np
import pytest
from datahelpers import make_docs, write_jsonl

from jaxadapt.data import DataConfig, SourceConfig, build_eval_batches, build_train_iterator
from jaxadapt.data.documents import held_out
from jaxadapt.data.tokenize import special_ids

SEQ = 48


def segments(batches: list[dict]):
    """(input_ids, targets, positions, loss_mask) of every segment of every row, in order."""
    for b in batches:
        for r in range(len(b["input_ids"])):
            seg = b["segment_ids"][r]
            ids = [s for s in np.unique(seg) if s]
            assert ids == list(range(1, len(ids) + 1)), "segments are numbered 1.. in order"
            assert (seg[: (seg > 0).sum()] > 0).all(), "padding only at the end of a row"
            for s in ids:
                m = seg == s
                yield tuple(b[k][r][m] for k in ("input_ids", "targets", "positions", "loss_mask"))


def check_rows(batches, tokenizer, docs, eos):
    """The pieces of the segments, glued back, are exactly the documents' pair sequences in order."""
    inputs, targets = [], []
    for inp, tgt, pos, mask in segments(batches):
        assert (pos == np.arange(len(pos))).all(), "positions restart at 0 in every segment"
        assert (mask == 1).all()
        assert (inp[1:] == tgt[:-1]).all(), "targets are the inputs shifted by one inside a segment"
        inputs.append(inp)
        targets.append(tgt)
    want = [np.array(tokenizer(d, add_special_tokens=False)["input_ids"] + [eos]) for d in docs]
    np.testing.assert_array_equal(np.concatenate(inputs), np.concatenate([w[:-1] for w in want]))
    np.testing.assert_array_equal(np.concatenate(targets), np.concatenate([w[1:] for w in want]))


def test_eval_packing_keeps_every_pair_once(tmp_path, tokenizer):
    docs = make_docs(60, seed=5, max_words=60)  # documents both shorter and longer than a row
    write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in docs])
    cfg = DataConfig(sources=(SourceConfig("a", (str(tmp_path / "a.jsonl"),)),), seq_len=SEQ, batch_size=4,
                     validation_fraction=0.5)
    batches = build_eval_batches(cfg, tokenizer)["a"]
    held = [d for d in docs if held_out(d, 0.5)]
    assert 10 < len(held) < 50
    check_rows(batches, tokenizer, held, tokenizer.eos_token_id)
    assert sum(int(b["num_bytes"].sum()) for b in batches) == sum(len(d.encode()) for d in held)
    assert {k: v.dtype for k, v in batches[0].items()} == {
        "input_ids": np.int32, "targets": np.int32, "segment_ids": np.int32, "positions": np.int32,
        "loss_mask": np.float32, "num_bytes": np.int64}
    last = batches[-1]
    assert (last["loss_mask"] == (last["segment_ids"] > 0)).all() and (last["targets"][last["segment_ids"] == 0] == 0).all()


def test_train_rows_are_full_and_exclude_validation(tmp_path, tokenizer):
    docs = make_docs(80, seed=6)
    write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in docs])
    cfg = DataConfig(sources=(SourceConfig("a", (str(tmp_path / "a.jsonl"),)),), seq_len=SEQ, batch_size=4,
                     validation_fraction=0.3, shuffle_buffer=16)
    it = build_train_iterator(cfg, tokenizer)
    batches = [next(it) for _ in range(20)]
    it.close()
    assert batches[0]["input_ids"].shape == (4, SEQ)
    for b in batches:
        assert (b["segment_ids"] > 0).all(), "concatenate-and-split leaves no padding"
    seen = {int(t) for b in batches for t in b["input_ids"].ravel()}
    held_only = {t for d in docs if held_out(d, 0.3) for t in tokenizer(d)["input_ids"]} - \
        {t for d in docs if not held_out(d, 0.3) for t in tokenizer(d)["input_ids"]}
    assert not (seen & held_only), "validation documents never reach training"
    for inp, tgt, pos, _ in segments(batches):
        assert (pos == np.arange(len(pos))).all() and (inp[1:] == tgt[:-1]).all()


@pytest.mark.parametrize("bos,eos", [("always", "never"), ("never", "always"), ("auto", "auto")])
def test_bos_eos_policy(tmp_path, tokenizer, bos, eos):
    docs = make_docs(12, seed=7, max_words=10)
    write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in docs])
    cfg = DataConfig(sources=(SourceConfig("a", (str(tmp_path / "a.jsonl"),)),), seq_len=512, batch_size=2,
                     validation_fraction=0.9, bos=bos, eos=eos)
    bos_id, eos_id = special_ids(tokenizer, bos, eos)
    assert (bos_id is not None) == (bos == "always") and (eos_id is not None) == (eos != "never")
    held = [d for d in docs if held_out(d, 0.9)]
    got = [(inp, tgt) for inp, tgt, _, _ in segments(build_eval_batches(cfg, tokenizer)["a"])]
    assert len(got) == len(held)  # short documents: one whole segment each
    for (inp, tgt), doc in zip(got, held):
        ids = [bos_id] * (bos_id is not None) + tokenizer(doc, add_special_tokens=False)["input_ids"] + \
            [eos_id] * (eos_id is not None)
        assert inp.tolist() == ids[:-1] and tgt.tolist() == ids[1:]
