"""Bad input fails with one clear line (exit 2) and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxadapt.cli import main


@pytest.fixture
def tiny(tmp_path, hf_dir):
    """A tiny model dir with its own 300-token tokenizer, a Dutch corpus, and a tokenizer extended from SmolLM2."""
    from jaxadapt.vocab import train, write_tokenizer_dir

    corpus = tmp_path / "nl.txt"
    corpus.write_text("De kat zit op de mat en de hond ligt in de mand.\n" * 50 + "Het regent vandaag.\n" * 30)
    model_dir, _ = hf_dir("llama_gqa")
    tok, config = train(["The cat sits on the mat and the dog lies in the basket; it rains today."] * 20, 300, "bpe")
    write_tokenizer_dir(tmp_path / "tok", tok, {"mode": "train"}, config=config)
    for f in (tmp_path / "tok").iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    return model_dir, corpus


def fails(capsys, argv, *phrases):
    out = argv[argv.index("--out") + 1]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for p in phrases:
        assert p in err, err
    parent = Path(out).parent
    assert not Path(out).exists() and not [p for p in parent.iterdir() if p.name.startswith(f".{Path(out).name}")]


def test_missing_and_empty_corpus(tiny, tmp_path, capsys):
    model_dir, _ = tiny
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "  "}\n\n')
    out = str(tmp_path / "out")
    fails(capsys, ["tokenizer", "extend", "--base", str(model_dir), "--corpus", str(tmp_path / "nope.txt"),
                   "--add", "5", "--out", out], "nope.txt", "no such file")
    fails(capsys, ["tokenizer", "extend", "--base", str(model_dir), "--corpus", str(empty), "--add", "5",
                   "--out", out], "empty.jsonl", "holds no text")
    fails(capsys, ["tokenizer", "train", "--corpus", str(empty), "--vocab-size", "500", "--out", out], "holds no text")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "x"}\n')
    assert main(["tokenizer", "stats", "--tokenizer", str(model_dir), "--corpus", str(bad)]) == 2
    assert "bad.jsonl:1: no field 'text'" in capsys.readouterr().err


def test_vocab_size_below_alphabet(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    out = str(tmp_path / "out")
    fails(capsys, ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "200", "--out", out],
          "--vocab-size 200 is below the alphabet", "256")
    fails(capsys, ["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "270", "--kind", "spm-bpe",
                   "--out", out], "256 byte tokens")
    fails(capsys, ["tokenizer", "extend", "--base", str(model_dir), "--corpus", str(corpus), "--replace",
                   "--vocab-size", "100", "--out", out], "below the base alphabet")
    fails(capsys, ["tokenizer", "extend", "--base", str(model_dir), "--corpus", str(corpus), "--add", "100000",
                   "--out", out], "yields only")
    fails(capsys, ["tokenizer", "extend", "--base", str(model_dir), "--corpus", str(corpus), "--optimize", "1.5",
                   "--out", out], "--optimize 1.5")
    protect = ["tokenizer", "extend", "--base", str(model_dir), "--corpus", str(corpus), "--protect", str(corpus)]
    fails(capsys, protect + ["--add", "5", "--merge-priority", "high", "--out", out], "--protect", "low")
    fails(capsys, protect + ["--add", "5", "--protect-weight", "0", "--out", out], "--protect-weight 0")
    fails(capsys, protect + ["--replace", "--vocab-size", "400", "--out", out], "--protect", "extension only")


def test_tokenizer_without_tokenizer_json(tiny, tmp_path, capsys):
    model_dir, corpus = tiny
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "tokenizer.model").write_bytes(b"\x00")
    out = str(tmp_path / "out")
    fails(capsys, ["tokenizer", "extend", "--base", str(slow), "--corpus", str(corpus), "--add", "5", "--out", out],
          "slow", "no tokenizer.json")
    fails(capsys, ["vocab", "adapt", "--model", str(model_dir), "--tokenizer", str(slow), "--out", out],
          "no tokenizer.json")
    (model_dir / "tokenizer.json").unlink()
    fails(capsys, ["vocab", "adapt", "--model", str(model_dir), "--tokenizer", str(tmp_path / "tok"), "--out", out],
          "no tokenizer.json", "--old-tokenizer")


def test_model_and_tokenizer_that_do_not_belong_together(tiny, smollm2_tok_dir, tmp_path, capsys):
    model_dir, corpus = tiny
    out = str(tmp_path / "out")
    # the model's embedding has 300 rows; SmolLM2's tokenizer has 49152 tokens
    fails(capsys, ["vocab", "adapt", "--model", str(model_dir), "--old-tokenizer", str(smollm2_tok_dir),
                   "--tokenizer", str(smollm2_tok_dir), "--out", out], "do not belong together", "49152")
    # a tokenizer extended from another base than the model's own tokenizer
    assert main(["tokenizer", "extend", "--base", str(smollm2_tok_dir), "--corpus", str(corpus), "--add", "5",
                 "--out", str(tmp_path / "smol_ext")]) == 0
    fails(capsys, ["vocab", "adapt", "--model", str(model_dir), "--tokenizer", str(tmp_path / "smol_ext"),
                   "--out", out], "do not belong together")
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"Ġkat": {"no-such-old-token": 1.0}}))
    ext = tmp_path / "ext"
    assert main(["tokenizer", "extend", "--base", str(model_dir), "--corpus", str(corpus), "--add", "5",
                 "--out", str(ext)]) == 0
    fails(capsys, ["vocab", "adapt", "--model", str(model_dir), "--tokenizer", str(ext), "--init",
                   f"mapping:{mapping}", "--out", out], "map.json")
