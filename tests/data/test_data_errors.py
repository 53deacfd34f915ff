"""Bad input: replaced and counted where a corpus can live with it, a one-line UserError naming it where not."""

from __future__ import annotations

import gzip
import logging

import pytest
from datahelpers import write_jsonl

from jaxadapt.cli import main
from jaxadapt.data import DataConfig, SourceConfig, build_eval_batches, build_train_iterator
from jaxadapt.data.documents import Documents
from jaxadapt.data.readers import resolve
from jaxadapt.errors import UserError


def read_all(src: SourceConfig):
    it = iter(Documents(src, resolve(src), role="all", validation_fraction=0.0, epochs=1))
    return [d["doc"] for d in it], it.counts


def test_invalid_utf8_is_replaced_counted_and_reported(tmp_path, caplog):
    (tmp_path / "a.txt").write_bytes(b"goed\nkapot \xff\xfe tekst\n\nook goed\n\xc3\x28\n")
    src = SourceConfig("s", (str(tmp_path / "a.txt"),), doc_split="line")
    with caplog.at_level(logging.WARNING, logger="jaxadapt.data"):
        docs, counts = read_all(src)
    assert docs == ["goed", "kapot \ufffd\ufffd tekst", "ook goed", "\ufffd("]
    assert counts["invalid_utf8"] == 2 and counts["empty"] == 1 and counts["documents"] == 4
    assert "a.txt: 2 documents with invalid UTF-8 (replaced by U+FFFD), 1 empty documents skipped" in caplog.text


def test_invalid_utf8_and_lone_surrogates_in_jsonl(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "ok \xff"}\n{"text": "half \\ud800 pair"}\n{"text": ""}\n')
    docs, counts = read_all(SourceConfig("s", (str(tmp_path / "a.jsonl"),)))
    assert docs == ["ok \ufffd", "half \ufffd pair"] and counts["invalid_utf8"] == 2 and counts["empty"] == 1


@pytest.mark.parametrize("lines,message", [
    ('{"text": "a"}\n{"body": "b"}\n', r"a\.jsonl:2: no field 'text' \(fields: body\); set text_field of source 's'"),
    ('{"text": "a"}\n\n{"text": 3}\n', r"a\.jsonl:3: field 'text' must be a string, got int"),
    ('{"text": "a"}\n{"text": "b"\n', r"a\.jsonl:2: invalid JSON"),
    ('["text"]\n', r"a\.jsonl:1: expected a JSON object, got list"),
])
def test_bad_records_name_file_and_line(tmp_path, lines, message):
    (tmp_path / "a.jsonl").write_text(lines)
    with pytest.raises(UserError, match=message):
        read_all(SourceConfig("s", (str(tmp_path / "a.jsonl"),)))


def test_missing_paths_and_empty_globs(tmp_path):
    with pytest.raises(UserError, match=f"source 's': no such file or directory: {tmp_path}/nope.jsonl"):
        resolve(SourceConfig("s", (str(tmp_path / "nope.jsonl"),)))
    with pytest.raises(UserError, match=r"source 's': glob .*\*\.parquet' matched no files"):
        resolve(SourceConfig("s", (str(tmp_path / "*.parquet"),)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no data files"):
        resolve(SourceConfig("s", (str(tmp_path / "empty"),)))


def test_unreadable_file_is_an_error_with_its_path(tmp_path):
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n' * 50)[:40])
    with pytest.raises(UserError, match=r"cannot read .*a\.jsonl\.gz: "):
        read_all(SourceConfig("s", (str(tmp_path / "a.jsonl.gz"),)))


def test_corpus_empty_after_filtering_is_an_error(tmp_path, tokenizer):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "  "}, {"text": ""}, {"text": None}])
    it = build_train_iterator(DataConfig(sources=(SourceConfig("s", (str(tmp_path / "a.jsonl"),)),)), tokenizer)
    with pytest.raises(UserError, match=r"data source .s.: no train documents in \S*/a\.jsonl \(3 empty"):
        next(it)  # raised through the prefetch thread as itself
    it.close()


def test_no_validation_batch_says_why(tmp_path, tokenizer):
    write_jsonl(tmp_path / "empty.jsonl", [{"text": " "}, {"text": ""}])
    write_jsonl(tmp_path / "two.jsonl", [{"text": "een"}, {"text": "twee"}])

    def batches(name, fraction):
        cfg = DataConfig(sources=(SourceConfig("s", (str(tmp_path / name),)),), validation_fraction=fraction)
        return build_eval_batches(cfg, tokenizer)

    with pytest.raises(UserError, match=r"data source 's' \(\S*empty\.jsonl\): no documents \(2 empty\)"):
        batches("empty.jsonl", 0.05)
    with pytest.raises(UserError, match=r"none of its 2 documents falls in the validation share "
                                        r"\(data\.validation_fraction=1e-06\); raise it, or set it to 0"):
        batches("two.jsonl", 1e-6)


def test_config_values_are_checked():
    with pytest.raises(UserError, match="format must be one of auto, text, jsonl, parquet, hf; got 'csv'"):
        SourceConfig("s", ("x",), format="csv")
    with pytest.raises(UserError, match="source names must be unique"):
        DataConfig(sources=(SourceConfig("s", ("x",)), SourceConfig("s", ("y",))))
    with pytest.raises(UserError, match="validation_fraction must be in"):
        DataConfig(validation_fraction=1.0)


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no such file or directory" in err
