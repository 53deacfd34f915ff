"""The document shuffle: seeded windows that never straddle an epoch, resumable mid-window."""

from __future__ import annotations

import json
import operator

from datahelpers import make_docs, write_jsonl

from jaxadapt.data.config import SourceConfig
from jaxadapt.data.documents import Documents
from jaxadapt.data.readers import resolve
from jaxadapt.data.shuffle import WindowShuffle


def shuffled(tmp_path, window: int):
    write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in make_docs(10, seed=4, max_words=5)])
    src = SourceConfig("s", (str(tmp_path / "a.jsonl"),))
    docs = Documents(src, resolve(src), role="all", validation_fraction=0.0)  # endless
    return WindowShuffle(docs, window=window, seed=7, key=operator.itemgetter("epoch"))


def test_a_window_larger_than_the_corpus_is_one_epoch(tmp_path):
    it = iter(shuffled(tmp_path, window=100))
    epochs = [[next(it)["doc"] for _ in range(10)] for _ in range(3)]
    assert all(sorted(e) == sorted(epochs[0]) for e in epochs), "every epoch shows each document once"
    assert len({tuple(e) for e in epochs}) == 3, "in a new order each time"


def test_resume_mid_window(tmp_path):
    ds = shuffled(tmp_path, window=4)
    it = iter(ds)
    for _ in range(6):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    want = [next(it)["doc"] for _ in range(15)]
    again = iter(ds)
    again.set_state(state)
    assert [next(again)["doc"] for _ in range(15)] == want
