"""Mixture weights are shares of training rows (so of tokens), deterministic and exact to within 2%."""

from __future__ import annotations

import random

from datahelpers import write_jsonl

from jaxadapt.data import DataConfig, SourceConfig, build_train_iterator


def test_mixture_proportions_over_10k_examples(tmp_path, tokenizer):
    # the sources use disjoint letters, so each row tells which source it came from
    rng = random.Random(0)
    for name, letters in (("nl", "aeiou"), ("en", "xyz")):
        docs = [" ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(3, 30)))
                for _ in range(200)]
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": d} for d in docs])
    x = tokenizer("x", add_special_tokens=False)["input_ids"][0]
    a = tokenizer("a", add_special_tokens=False)["input_ids"][0]
    cfg = DataConfig(sources=(SourceConfig("nl", (str(tmp_path / "nl.jsonl"),), weight=9.0),
                              SourceConfig("en", (str(tmp_path / "en.jsonl"),), weight=1.0)),
                     seq_len=16, batch_size=250, shuffle_buffer=64, validation_fraction=0.0)
    it = build_train_iterator(cfg, tokenizer)
    counts = {"nl": 0, "en": 0}
    for _ in range(40):  # 10,000 rows
        for row in next(it)["input_ids"]:
            is_en, is_nl = x in row, a in row
            assert is_en != is_nl or not (is_en or is_nl)
            counts["en" if is_en else "nl"] += 1
    it.close()
    assert abs(counts["nl"] / 10_000 - 0.9) <= 0.02, counts
