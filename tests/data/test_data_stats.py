"""`jaxadapt data stats`: documents, bytes, words and tokens per source, skipped and replaced input reported."""

from __future__ import annotations

from datahelpers import write_jsonl

from jaxadapt.cli import main
from jaxadapt.data.config import SourceConfig
from jaxadapt.data.stats import corpus_stats

DOCS = ["een kleine fiets", "café naïef", "the molen of de gracht is"]


def test_counts(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in DOCS] + [{"text": " "}])
    c = corpus_stats(SourceConfig("a", (str(path),)), tokenizer)
    assert c["documents"] == 3 and c["empty"] == 1
    assert c["bytes"] == sum(len(d.encode()) for d in DOCS) and c["words"] == 11
    assert c["tokens"] == sum(len(tokenizer(d)["input_ids"]) for d in DOCS)


def test_cli_table_with_tokenizer(tmp_path, tokenizer, capsys):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": d} for d in DOCS])
    (tmp_path / "b.txt").write_bytes(b"kapot \xff\n\nheel\n")
    tokenizer.save_pretrained(tmp_path / "tok")
    assert main(["data", "stats", str(path), str(tmp_path / "b.txt"), "--doc-split", "blank_line",
                 "--tokenizer", str(tmp_path / "tok")]) == 0
    out, err = capsys.readouterr()
    lines = [line.split("\t") for line in out.splitlines()]
    assert lines[0] == ["source", "documents", "bytes", "words", "tokens", "bytes/token"]
    assert lines[1][:4] == [str(path), "3", str(sum(len(d.encode()) for d in DOCS)), "11"]
    assert lines[2][:2] == [str(tmp_path / "b.txt"), "2"] and "1 invalid utf8" in err
