"""`jaxadapt data split` from and into a `gs://` bucket (a GCS emulator on localhost): the files a local split writes,
byte for byte; a bucket that does not exist is one line, exit 2, nothing written."""

from __future__ import annotations

from datahelpers import write_jsonl

from jaxadapt.cli import main

BUCKET = "jaxadapt-data"
DOCS = [f"document {i}: " + "de kat zit op de mat " * (i % 5 + 1) for i in range(200)]


def test_split_in_a_bucket(gcs, tmp_path, monkeypatch, capsys):
    fs, _ = gcs
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in DOCS])
    fs.put_file(str(src), f"{BUCKET}/corpora/c.jsonl")
    split = ["data", "split", "--heldout-fraction", "0.1"]
    assert main([*split, str(src), "--out", str(tmp_path / "local")]) == 0
    assert main([*split, f"gs://{BUCKET}/corpora/c.jsonl", "--out", f"gs://{BUCKET}/split"]) == 0
    fs.invalidate_cache()
    for name in ("train.jsonl", "heldout.jsonl"):
        assert fs.cat(f"{BUCKET}/split/{name}") == (tmp_path / "local" / name).read_bytes(), name
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/split")) == ["heldout.jsonl", "split.json",
                                                                           "train.jsonl"]

    monkeypatch.chdir(tmp_path)
    local = sorted(tmp_path.iterdir())
    for out, message in ((f"gs://{BUCKET}/split", f"output gs://{BUCKET}/split: exists and is not empty"),
                         ("gs://no-such-bucket/split", "output gs://no-such-bucket/split: no bucket "
                                                       "gs://no-such-bucket")):
        capsys.readouterr()
        assert main([*split, f"gs://{BUCKET}/corpora/c.jsonl", "--out", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    fs.invalidate_cache()
    assert len(fs.find(BUCKET)) == 4 and sorted(tmp_path.iterdir()) == local


def test_stats_with_a_tokenizer_file_in_a_bucket(gcs, tmp_path, capsys):
    """`data stats --tokenizer gs://.../tokenizer.json` counts the tokens a local copy of the same file counts."""
    from jaxadapt.assets import smollm2_dir

    fs, _ = gcs
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": d} for d in DOCS[:20]])
    fs.put_file(str(smollm2_dir() / "tokenizer.json"), f"{BUCKET}/tok/tokenizer.json")
    rows = []
    for tok in (str(smollm2_dir() / "tokenizer.json"), f"gs://{BUCKET}/tok/tokenizer.json"):
        capsys.readouterr()
        assert main(["data", "stats", str(src), "--tokenizer", tok]) == 0
        rows.append(capsys.readouterr().out)
    assert rows[0] == rows[1] and int(rows[0].splitlines()[1].split("\t")[4]) > 0
