"""`jaxadapt report` from two synthetic run dirs."""

from __future__ import annotations

import json

from jaxadapt.cli import main


def fake_run(path, loss0, bpb0, stats=None):
    rows = []
    for step in (10, 20, 30):
        rows.append({"step": step, "loss": loss0 / step * 10, "lr": 1e-4, "tokens_seen": step * 4096,
                     "tokens_per_sec": 1000.0 + step})
        rows.append({"step": step, "eval/nl/loss": 2.0, "eval/nl/bpb": bpb0 - step / 100,
                     "eval/en/loss": 1.0, "eval/en/bpb": 1.0 + step / 1000})
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if stats:
        (path / "tokenizer_stats.json").write_text(json.dumps(stats))
    return path


def test_report(tmp_path):
    stats = {"old": {"nl": {"tokens_per_word": 2.1, "bytes_per_token": 2.9}},
             "new": {"nl": {"tokens_per_word": 1.4, "bytes_per_token": 4.2}}}
    a, b = fake_run(tmp_path / "lora", 3.0, 1.5), fake_run(tmp_path / "full", 2.5, 1.3, stats)
    out = tmp_path / "report"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    md = (out / "README.md").read_text()
    assert {p.name for p in out.iterdir()} == {"README.md", "loss.png", "bpb.png", "bpb_before_after.png",
                                               "tokenizer.png"}
    assert "| run | step | final loss | bpb en | bpb nl | tokens seen | tokens/s |" in md
    assert "| full | 30 | 0.8333 | 1.0300 | 1.0000 | 122,880 | 1,025 |" in md  # tokens/s: mean of steps 20, 30
    assert main(["report", str(a), "--out", str(tmp_path / "one")]) == 0  # no tokenizer stats: no such plot
    assert not (tmp_path / "one" / "tokenizer.png").exists()
