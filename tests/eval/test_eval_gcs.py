"""`jaxadapt eval` and `jaxadapt report` with their corpora, tasks, results and reports in a `gs://` bucket (a GCS
emulator on localhost): the same numbers and the same report as local paths; a bad URL is one line, exit 2, before
any model loads, nothing written."""

from __future__ import annotations

import json

import pytest
from evalhelpers import TEXTS

from jaxadapt.cli import main

BUCKET = "jaxadapt-eval"
EVAL = ["--seq-len", "32", "--batch-size", "2"]


@pytest.fixture(scope="module")
def inputs(gcs, tmp_path_factory):
    """A corpus, an MC task and a run dir's metrics, each locally and in the bucket: (local root, bucket root)."""
    fs, _ = gcs
    root = tmp_path_factory.mktemp("inputs")
    (root / "nl.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS))
    items = [{"context": "De kat zit op de", "choices": ["mat", "maan"], "label": 0},
             {"context": "The quick brown", "choices": ["fox", "box"], "label": 0}]
    (root / "task.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (root / "run").mkdir()
    rows = [{"step": s, "loss": 3.0 / s, "tokens_seen": 64 * s, "tokens_per_sec": 100.0 + s,
             "eval/nl/bpb": 2.0 - s / 10} for s in (1, 2, 3)]
    (root / "run" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fs.put(str(root) + "/", f"{BUCKET}/in", recursive=True)
    return root, f"gs://{BUCKET}/in"


def test_eval_and_report_in_a_bucket(gcs, inputs, tiny_dir, tmp_path):
    fs, _ = gcs
    local, url = inputs
    model = str(tiny_dir[0])
    for where, out in ((local, tmp_path / "evals"), (url, f"gs://{BUCKET}/evals")):
        assert main(["eval", model, "--target", f"nl={where}/nl.jsonl", "--mc", f"{where}/task.jsonl", *EVAL,
                     "--json", f"{out}/tiny.json"]) == 0
        assert main(["eval", model, "--target", f"nl={where}/nl.jsonl", "--mc", f"{where}/task.jsonl", *EVAL,
                     "--base", f"{out}/tiny.json", "--json", f"{out}/vs_base.json"]) == 0  # the base's JSON reused
    fs.invalidate_cache()
    for name in ("tiny.json", "vs_base.json"):
        ours, theirs = json.loads(fs.cat(f"{BUCKET}/evals/{name}")), json.loads((tmp_path / "evals" / name).read_text())
        assert ours["bpb"] == theirs["bpb"] and ours["mc"] == theirs["mc"], name
    assert json.loads(fs.cat(f"{BUCKET}/evals/vs_base.json"))["retention"]["flagged"] == []

    assert main(["report", str(local / "run"), str(tmp_path / "evals" / "vs_base.json"),
                 "--out", str(tmp_path / "report")]) == 0
    assert main(["report", f"{url}/run", f"gs://{BUCKET}/evals/vs_base.json", "--out", f"gs://{BUCKET}/report"]) == 0
    fs.invalidate_cache()
    readme = fs.cat(f"{BUCKET}/report/README.md").decode()
    assert readme == (tmp_path / "report" / "README.md").read_text().replace(str(tmp_path / "evals"), url)
    assert "## Retention (base vs adapted)" in readme and "| run | 3 |" in readme
    written = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{BUCKET}/report")}
    assert written == {p.name for p in (tmp_path / "report").iterdir()}


def test_bad_urls_are_one_line_and_write_nothing(gcs, inputs, tiny_dir, tmp_path, monkeypatch, capsys):
    fs, _ = gcs
    _, url = inputs
    monkeypatch.chdir(tmp_path)
    fs.invalidate_cache()
    before = sorted(fs.find(BUCKET))
    cases = {
        "--json gs://no-such-bucket/r.json: no bucket gs://no-such-bucket":
            ["eval", str(tiny_dir[0]), "--bpb", f"nl={url}/nl.jsonl", *EVAL, "--json", "gs://no-such-bucket/r.json"],
        "--json nosuchfs://b/r.json: unknown protocol 'nosuchfs'":
            ["eval", str(tiny_dir[0]), "--bpb", f"nl={url}/nl.jsonl", *EVAL, "--json", "nosuchfs://b/r.json"],
        f"--bpb nl: data source 'nl': no such file or directory: {url}/none.jsonl":
            ["eval", str(tiny_dir[0]), "--bpb", f"nl={url}/none.jsonl"],
        f"{url}/none: not a run dir (no metrics.jsonl)": ["report", f"{url}/none", "--out", f"gs://{BUCKET}/r"],
        "output gs://no-such-bucket/r: no bucket gs://no-such-bucket": ["report", f"{url}/run", "--out",
                                                                        "gs://no-such-bucket/r"],
    }
    for message, argv in cases.items():
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {message}"), (argv, err)
    fs.invalidate_cache()
    assert sorted(fs.find(BUCKET)) == before
    assert list(tmp_path.iterdir()) == []
