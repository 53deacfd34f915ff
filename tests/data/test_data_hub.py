"""Hub datasets as users name them (a configuration, data files, a split, a revision), read offline from a real
hub-cache layout: the same documents as the files themselves, exact resume, and one-line errors."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datahelpers import make_docs, resume_check
from hubcache import add_snapshot, offline

from jaxadapt.data import DataConfig, SourceConfig, build_train_iterator
from jaxadapt.data.documents import Documents
from jaxadapt.data.readers import resolve
from jaxadapt.errors import UserError

REPO = "tiny-org/corpus"
C1, C2 = "1" * 40, "2" * 40
CARD = """---
license: cc-by-4.0
configs:
- config_name: nl
  data_files:
  - split: train
    path: nl/train-*.parquet
  - split: validation
    path: nl/valid.jsonl
- config_name: en
  data_files: en/*.jsonl.gz
---
# A corpus per language, as CulturaX and FineWeb-2 are laid out
"""
NL = [make_docs(25, seed=10), make_docs(25, seed=11)]
NL_VALID = make_docs(6, seed=12)
EN = make_docs(20, seed=13, max_words=20)
NL_V2 = make_docs(15, seed=14)


def parquet(texts: list[str]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": texts, "url": [f"https://example.org/{i}" for i in range(len(texts))]}), buf,
                   row_group_size=4)
    return buf.getvalue()


def jsonl(texts: list[str]) -> bytes:
    return "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hubdata")
    files = {"README.md": CARD.encode(), "nl/valid.jsonl": jsonl(NL_VALID),
             "en/part-0.jsonl.gz": gzip.compress(jsonl(EN)),
             "nl/train-00000.parquet": parquet(NL[0]), "nl/train-00001.parquet": parquet(NL[1])}
    add_snapshot(cache, "dataset", REPO, C1, files)
    # a later commit on branch v2 where the Dutch training set was replaced
    add_snapshot(cache, "dataset", REPO, C2, {**files, "nl/train-00000.parquet": parquet(NL_V2)}, refs=("v2",))
    return cache


@pytest.fixture(autouse=True)
def hub(cache, monkeypatch):
    yield from offline(cache, monkeypatch)


def docs(source: SourceConfig) -> list[str]:
    return [d["doc"] for d in Documents(source, resolve(source), role="all", validation_fraction=0.0, epochs=1,
                                        shuffle_files=False)]


@pytest.mark.parametrize("streaming", [False, True], ids=["cached", "streaming-offline"])
def test_a_configuration_reads_its_split(streaming):
    nl = SourceConfig("nl", (REPO,), format="hf", hf_name="nl", hf_streaming=streaming)
    refs = resolve(nl)
    assert [r.path.rsplit("/", 2)[-2:] for r in refs] == [["nl", "train-00000.parquet"], ["nl", "train-00001.parquet"]]
    assert {r.commit for r in refs} == {C1} and {r.format for r in refs} == {"parquet"}
    assert docs(nl) == NL[0] + NL[1]
    assert docs(SourceConfig("v", (REPO,), format="hf", hf_name="nl", hf_split="validation")) == NL_VALID
    assert docs(SourceConfig("en", (REPO,), format="hf", hf_name="en")) == EN


def test_data_files_urls_and_revisions():
    assert docs(SourceConfig("en", (REPO,), format="hf", hf_data_files=("en/*.jsonl.gz",))) == EN
    assert docs(SourceConfig("en", (f"hf://datasets/{REPO}/en/*.jsonl.gz",))) == EN
    assert docs(SourceConfig("nl", (f"hf://datasets/{REPO}@v2/nl/train-00000.parquet",))) == NL_V2
    assert docs(SourceConfig("nl", (REPO,), format="hf", hf_name="nl", hf_revision="v2")) == NL_V2 + NL[1]
    assert docs(SourceConfig("nl", (REPO,), format="hf", hf_name="nl", hf_revision=C1)) == NL[0] + NL[1]


def test_a_yaml_config_selects_a_hub_configuration(tmp_path):
    from jaxadapt.config.loader import load_config
    from jaxadapt.train.config import RunConfig

    (tmp_path / "run.yaml").write_text(f"""
data:
  sources:
    - {{name: nl, paths: [{REPO}], format: hf, hf_name: nl, hf_revision: v2, hf_streaming: true}}
    - {{name: en, paths: ["hf://datasets/{REPO}/en/*.jsonl.gz"], weight: 0.2}}
    - {{name: en2, paths: [{REPO}], format: hf, hf_data_files: [en/*.jsonl.gz]}}
""")
    cfg = load_config(RunConfig, tmp_path / "run.yaml", ["data.sources.0.hf_split=validation"])
    nl, en, en2 = cfg.data.sources
    assert (nl.hf_name, nl.hf_revision, nl.hf_streaming, nl.hf_split) == ("nl", "v2", True, "validation")
    assert docs(nl) == NL_VALID and docs(en) == EN and en2.hf_data_files == ("en/*.jsonl.gz",) and docs(en2) == EN


def test_training_batches_resume_exactly_inside_a_hub_parquet_file(tokenizer):
    """Positions are row indices into the resolved files: a restored iterator continues mid row group."""
    cfg = DataConfig(sources=(SourceConfig("nl", (REPO,), format="hf", hf_name="nl"),
                              SourceConfig("en", (f"hf://datasets/{REPO}/en/*.jsonl.gz",), weight=0.5)),
                     seq_len=32, batch_size=2, shuffle_buffer=8, validation_fraction=0.0)
    resume_check(cfg, tokenizer, skip=7)


def test_resume_refuses_a_revision_that_moved(cache, tokenizer):
    """A branch that moved between save and restore would put the position in other files: refuse, naming both."""
    cfg = DataConfig(sources=(SourceConfig("nl", (REPO,), format="hf", hf_name="nl"),), seq_len=32, batch_size=2,
                     validation_fraction=0.0)
    it = build_train_iterator(cfg, tokenizer)
    next(it)
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    (cache / "datasets--tiny-org--corpus" / "refs" / "main").write_text(C2)  # main moves on
    try:
        again = build_train_iterator(cfg, tokenizer)
        with pytest.raises(UserError, match=f"source 'nl': .*in 2 files \\({C1}\\).*now resolves to 2 \\({C2}\\).*"
                                            "pin hf_revision"):
            again.set_state(state)
        again.close()
    finally:
        (cache / "datasets--tiny-org--corpus" / "refs" / "main").write_text(C1)


@pytest.mark.parametrize("kw,message", [
    ({"hf_name": "fr"}, r"source 's': hub dataset tiny-org/corpus has no configuration 'fr' \(it has nl, en\); "
                        "fix hf_name"),
    ({}, r"has configurations nl, en; set hf_name to one"),
    ({"hf_name": "nl", "hf_split": "test"}, r"configuration 'nl' of tiny-org/corpus has no split 'test' "
                                            r"\(splits: train, validation\); fix hf_split"),
    ({"hf_data_files": ("de/*.parquet",)}, r"hub dataset tiny-org/corpus@main: no files match de/\*.parquet in "
                                           "the hub cache"),
    ({"hf_name": "nl", "hf_revision": "v9"}, r"hub dataset tiny-org/corpus@v9 cannot be had"),
])
def test_hub_dataset_errors_are_one_line(kw, message):
    with pytest.raises(UserError, match=message):
        resolve(SourceConfig("s", (REPO,), format="hf", **kw))


def test_other_hub_errors_are_one_line(cache):
    with pytest.raises(UserError, match=r"source 's': hub dataset tiny-org/absent@main cannot be had"):
        resolve(SourceConfig("s", ("tiny-org/absent",), format="hf"))
    with pytest.raises(UserError, match=r"no such file or directory: tiny-org/absent \(a hub dataset id needs "
                                        "format: hf\\)"):
        resolve(SourceConfig("s", ("tiny-org/absent",)))
    with pytest.raises(UserError, match=r"hf://datasets/tiny-org/corpus: expected hf://datasets/ORG/NAME"):
        resolve(SourceConfig("s", ("hf://datasets/tiny-org/corpus",)))
    add_snapshot(cache, "dataset", "tiny-org/bare", C1, {"README.md": b"# no header\n", "a.parquet": parquet(EN)})
    with pytest.raises(UserError, match="tiny-org/bare declares no configurations in its card; set hf_data_files"):
        resolve(SourceConfig("s", ("tiny-org/bare",), format="hf"))
    add_snapshot(cache, "dataset", "tiny-org/csv", C1, {"README.md": b"", "a.csv": b"text\nx\n"})
    with pytest.raises(UserError, match=r"a.csv of hub dataset tiny-org/csv is neither Parquet, JSONL nor text"):
        resolve(SourceConfig("s", ("tiny-org/csv",), format="hf", hf_data_files=("*.csv",)))
