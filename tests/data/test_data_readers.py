"""Every source format streams the same documents, and resumes from any position it reported."""

from __future__ import annotations

import gzip
import json

import pytest
from datahelpers import make_docs, write_jsonl

from jaxadapt.data.config import SourceConfig
from jaxadapt.data.documents import Documents
from jaxadapt.data.readers import Reader, resolve

DOCS = make_docs(40, seed=3)


def stream(source: SourceConfig) -> list[str]:
    return [d["doc"] for d in Documents(source, resolve(source), role="all", validation_fraction=0.0, epochs=1,
                                         shuffle_files=False)]


def _jsonl(tmp_path):
    return SourceConfig("s", (str(write_jsonl(tmp_path / "a.jsonl", [{"text": t, "id": i} for i, t in enumerate(DOCS)])),))


def _jsonl_gz(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in DOCS).encode()))
    return SourceConfig("s", (str(path),))


def _jsonl_zst(tmp_path):
    import zstandard

    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress("".join(json.dumps({"body": t}) + "\n" for t in DOCS).encode()))
    return SourceConfig("s", (str(path),), text_field="body")


def _parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), tmp_path / "a.parquet", row_group_size=7)
    return SourceConfig("s", (str(tmp_path / "a.parquet"),))


def _hf_saved(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "hf"))
    return SourceConfig("s", (str(tmp_path / "hf"),))


def _hf_builder_dir(tmp_path):
    """A plain directory of data files, read by the datasets library's packaged builders (streaming)."""
    (tmp_path / "ds" / "data").mkdir(parents=True)
    write_jsonl(tmp_path / "ds" / "data" / "train.jsonl", [{"text": t} for t in DOCS])
    return SourceConfig("s", (str(tmp_path / "ds"),), format="hf")


def _text_lines(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(DOCS) + "\n")
    return SourceConfig("s", (str(tmp_path / "a.txt"),), doc_split="line")


def _text_blocks(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n\n".join(d.replace(" de ", " de\n") for d in DOCS) + "\n")
    return SourceConfig("s", (str(tmp_path / "a.txt"),), doc_split="blank_line")


def _text_files_in_dir(tmp_path):
    for i, d in enumerate(DOCS):
        sub = tmp_path / "corpus" / f"part{i // 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:03d}.txt").write_text(d)
    return SourceConfig("s", (str(tmp_path / "corpus"),))


def _glob(tmp_path):
    write_jsonl(tmp_path / "x1.jsonl", [{"text": t} for t in DOCS[:15]])
    write_jsonl(tmp_path / "x2.jsonl", [{"text": t} for t in DOCS[15:]])
    return SourceConfig("s", (str(tmp_path / "x*.jsonl"),))


FORMATS = [_jsonl, _jsonl_gz, _jsonl_zst, _parquet, _hf_saved, _hf_builder_dir, _text_lines, _text_files_in_dir,
           _glob]


@pytest.mark.parametrize("make", FORMATS, ids=lambda f: f.__name__[1:])
def test_formats_stream_the_documents(tmp_path, make):
    assert stream(make(tmp_path)) == DOCS


def test_blank_line_blocks_keep_inner_newlines(tmp_path):
    assert stream(_text_blocks(tmp_path)) == [d.replace(" de ", " de\n") for d in DOCS]


@pytest.mark.parametrize("make", [_jsonl, _jsonl_gz, _jsonl_zst, _parquet, _hf_saved, _hf_builder_dir, _text_lines,
                                  _text_blocks],
                         ids=lambda f: f.__name__[1:])
def test_reader_resumes_from_reported_position(tmp_path, make):
    source = make(tmp_path)
    reader = Reader(resolve(source)[0], source, want_records=False)
    records = list(reader.records(0))
    pos, _ = records[16]
    assert list(reader.records(pos)) == records[17:]


def test_records_mode_yields_whole_rows(tmp_path):
    source = _jsonl(tmp_path)
    docs = list(Documents(source, resolve(source), role="all", validation_fraction=0.0, records=True, epochs=1))
    assert sorted(d["doc"]["id"] for d in docs) == list(range(len(DOCS)))
    assert [d["where"] for d in docs[:2]] == [f"{tmp_path / 'a.jsonl'}:1", f"{tmp_path / 'a.jsonl'}:2"]


def _in_memory(source: SourceConfig, tmp_path, name: str) -> SourceConfig:
    """The same files under `memory://NAME/`, read through fsspec as a bucket would be (the path is rewritten)."""
    import fsspec

    mem = fsspec.filesystem("memory")
    for f in tmp_path.rglob("*"):
        if f.is_file():
            mem.pipe(f"/{name}/{f.relative_to(tmp_path)}", f.read_bytes())
    paths = tuple(p.replace(str(tmp_path), f"memory://{name}") for p in source.paths)
    return SourceConfig(source.name, paths, format=source.format, doc_split=source.doc_split,
                        text_field=source.text_field)


URL_FORMATS = [_jsonl, _jsonl_gz, _jsonl_zst, _parquet, _text_lines, _text_blocks, _text_files_in_dir, _glob]


@pytest.mark.parametrize("make", URL_FORMATS, ids=lambda f: f.__name__[1:])
def test_urls_read_like_local_files(tmp_path, make, request):
    """A URL source (fsspec: gs://, s3://, memory://) yields the same documents and resumes from the same positions."""
    local = make(tmp_path)
    url = _in_memory(local, tmp_path, request.node.name.replace("[", "-").rstrip("]"))
    assert all(p.startswith("memory://") for p in url.paths)
    assert stream(url) == stream(local)
    refs = resolve(url)
    assert [r.format for r in refs] == [r.format for r in resolve(local)]
    reader = Reader(refs[-1], url, want_records=False)
    records = list(reader.records(0))
    pos, _ = records[len(records) // 2]
    assert list(reader.records(pos)) == records[len(records) // 2 + 1:]


def test_a_url_that_names_nothing_is_one_line(tmp_path):
    from jaxadapt.errors import UserError

    with pytest.raises(UserError, match=r"source 's': no such file or directory: memory://nowhere/a.jsonl"):
        resolve(SourceConfig("s", ("memory://nowhere/a.jsonl",)))
    with pytest.raises(UserError, match=r"glob 'memory://nowhere/\*.jsonl' matched no files"):
        resolve(SourceConfig("s", ("memory://nowhere/*.jsonl",)))
    with pytest.raises(UserError, match=r"unknown protocol 'nosuchfs'"):
        resolve(SourceConfig("s", ("nosuchfs://b/a.jsonl",)))
