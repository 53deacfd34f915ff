"""The iterator state is plain JSON, and a fresh iterator set to it yields exactly the batches that followed."""

from __future__ import annotations


import numpy as np
import pytest
from datahelpers import assert_same, make_docs, resume_check, write_jsonl

from jaxadapt.data import DataConfig, SourceConfig, build_train_iterator
from jaxadapt.errors import UserError


def corpus(tmp_path, chat: bool = False) -> tuple[SourceConfig, ...]:
    if chat:
        rows = [{"prompt": q, "response": a} for q, a in zip(make_docs(120, seed=1, max_words=20),
                                                           make_docs(120, seed=2, max_words=30))]
        return (SourceConfig("chat", (str(write_jsonl(tmp_path / "c.jsonl", rows)),)),)
    write_jsonl(tmp_path / "nl1.jsonl", [{"text": d} for d in make_docs(150, seed=1)])
    write_jsonl(tmp_path / "nl2.jsonl", [{"text": d} for d in make_docs(150, seed=2)])
    write_jsonl(tmp_path / "en.jsonl", [{"text": d} for d in make_docs(100, seed=3, max_words=15)])
    return (SourceConfig("nl", (str(tmp_path / "nl*.jsonl"),), weight=0.7),
            SourceConfig("en", (str(tmp_path / "en.jsonl"),), weight=0.3))


@pytest.mark.parametrize("task,skip", [("pretrain", 3), ("pretrain", 45), ("sft", 5)])
def test_resume_yields_the_same_next_batches(tmp_path, tokenizer, task, skip):
    # 45 batches of 8x32 pass the end of the first epoch of the smaller source and several shuffle windows
    cfg = DataConfig(sources=corpus(tmp_path, chat=task == "sft"), task=task, seq_len=32, batch_size=8,
                     shuffle_buffer=32, tokenize_batch=16, packing_bins=4, validation_fraction=0.05)
    resume_check(cfg, tokenizer, skip)


def test_same_config_same_batches_and_seed_changes_them(tmp_path, tokenizer):
    sources = corpus(tmp_path)
    take = lambda cfg: [next(it) for it in [build_train_iterator(cfg, tokenizer)] for _ in range(3)]
    cfg = DataConfig(sources=sources, seq_len=32, batch_size=4, shuffle_buffer=64)
    assert_same(take(cfg), take(cfg))
    other = take(DataConfig(sources=sources, seq_len=32, batch_size=4, shuffle_buffer=64, seed=1))
    assert not np.array_equal(take(cfg)[0]["input_ids"], other[0]["input_ids"])


def test_state_of_another_pipeline_is_refused(tmp_path, tokenizer):
    sources = corpus(tmp_path)
    state = build_train_iterator(DataConfig(sources=sources, seq_len=32, batch_size=4), tokenizer).get_state()
    with pytest.raises(UserError, match="seq_len: saved 32, now 64"):
        build_train_iterator(DataConfig(sources=sources, seq_len=64, batch_size=4), tokenizer).set_state(state)


def test_worker_processes_resume_and_report_bad_input(tmp_path, tokenizer):
    """grain worker processes: exact resume, and a bad record surfaces as the UserError that names it."""
    cfg = DataConfig(sources=corpus(tmp_path)[1:], seq_len=32, batch_size=4, shuffle_buffer=32, num_workers=2)
    batches = resume_check(cfg, tokenizer, skip=4, after=2)
    # workers alternate: these are batch 2 of worker 0 and of worker 1, which must read different documents
    assert not np.array_equal(batches[0]["input_ids"], batches[1]["input_ids"])
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"body": "no text field"}])
    it = build_train_iterator(DataConfig(sources=(SourceConfig("bad", (str(bad),)),), num_workers=1), tokenizer)
    with pytest.raises(UserError, match=r"bad\.jsonl:2: no field 'text' \(fields: body\)"):
        next(it)
    it.close()
