"""Tokenizer commands with their corpora, tokenizers and outputs in a `gs://` bucket (a GCS emulator on localhost):
the same results as local paths, and a bad URL is one line, exit 2, nothing written anywhere."""

from __future__ import annotations

import json
import random

import pytest

from jaxadapt.cli import main

BUCKET = "jaxadapt-vocab"
SYLLABLES = ["ka", "boe", "ren", "fiet", "sen", "straat", "ge", "zon", "wa", "ter", "lijk", "heid", "ui", "oog"]


@pytest.fixture(scope="module")
def corpus(gcs, tmp_path_factory):
    """The same word salad locally and at gs://BUCKET/data/nl.jsonl."""
    fs, _ = gcs
    rng = random.Random(0)
    words = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(400)]
    text = "".join(json.dumps({"text": " ".join(rng.choices(words, k=15))}) + "\n" for _ in range(300))
    local = tmp_path_factory.mktemp("corpus") / "nl.jsonl"
    local.write_text(text)
    fs.pipe(f"{BUCKET}/data/nl.jsonl", text.encode())
    return local, f"gs://{BUCKET}/data/nl.jsonl"


def test_train_extend_and_stats_in_a_bucket(gcs, corpus, tmp_path, capsys):
    fs, _ = gcs
    local, url = corpus
    train = ["tokenizer", "train", "--vocab-size", "300"]
    assert main([*train, "--corpus", url, "--out", f"gs://{BUCKET}/tok"]) == 0
    assert main([*train, "--corpus", str(local), "--out", str(tmp_path / "tok")]) == 0
    fs.invalidate_cache()
    local_tok = json.loads((tmp_path / "tok/tokenizer.json").read_text())
    assert json.loads(fs.cat(f"{BUCKET}/tok/tokenizer.json")) == local_tok
    assert {p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/tok")} == {p.name for p in (tmp_path / "tok").iterdir()}

    assert main(["tokenizer", "extend", "--base", f"gs://{BUCKET}/tok", "--corpus", url, "--add", "5",
                 "--out", f"gs://{BUCKET}/ext"]) == 0  # a tokenizer read from the bucket, another written there
    fs.invalidate_cache()
    ext = json.loads(fs.cat(f"{BUCKET}/ext/tokenizer.json"))
    assert len(ext["model"]["vocab"]) == len(json.loads(fs.cat(f"{BUCKET}/tok/tokenizer.json"))["model"]["vocab"]) + 5

    capsys.readouterr()
    assert main(["tokenizer", "stats", "--tokenizer", f"gs://{BUCKET}/ext", "--corpus", url, "--json",
                 "--json-out", f"gs://{BUCKET}/stats/ext.json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    fs.invalidate_cache()
    assert json.loads(fs.cat(f"{BUCKET}/stats/ext.json")) == printed
    assert printed[0]["tokenizer"] == f"gs://{BUCKET}/ext" and printed[0]["corpus"] == url


@pytest.mark.parametrize("out, why", [("gs://no-such-bucket/tok", "no bucket gs://no-such-bucket"),
                                     ("nosuchfs://b/tok", "unknown protocol 'nosuchfs'")])
def test_a_bad_url_is_one_line_and_writes_nothing(gcs, corpus, tmp_path, monkeypatch, capsys, out, why):
    """Refused before any work: the option, the URL and what is wrong with it, in one line; nothing in the bucket,
    nothing locally (no dir named `gs:` or `nosuchfs:`)."""
    fs, _ = gcs
    monkeypatch.chdir(tmp_path)
    fs.invalidate_cache()
    before = sorted(fs.find(BUCKET))
    cases = {f"output {out}: {why}": ["tokenizer", "train", "--corpus", corpus[1], "--vocab-size", "300", "--out", out],
             f"--json-out {out}.json: {why}": ["tokenizer", "stats", "--tokenizer", str(corpus[0].parent),
                                               "--corpus", corpus[1], "--json-out", f"{out}.json"]}
    for message, argv in cases.items():
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    fs.invalidate_cache()
    assert sorted(fs.find(BUCKET)) == before
    assert list(tmp_path.iterdir()) == []
