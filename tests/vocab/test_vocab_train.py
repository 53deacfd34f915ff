"""Training tokenizers from scratch in the three styles; statistics as a table and as JSON."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer
from vocabhelpers import MIXED

from jaxadapt.cli import main


@pytest.fixture(scope="module")
def corpus(dutch, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "nl.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in dutch[0][:150]))
    return path


@pytest.mark.parametrize("kind", ["bpe", "spm-bpe", "unigram"])
def test_train_kinds(kind, corpus, tmp_path):
    out = tmp_path / kind
    assert main(["tokenizer", "train", "--corpus", str(corpus), "--vocab-size", "2000", "--kind", kind,
                 "--special-token", "<unk>", "--special-token", "<s>", "--special-token", "</s>",
                 "--special-token", "<|im_start|>", "--out", str(out)]) == 0
    tok = AutoTokenizer.from_pretrained(out)
    assert len(tok) == 2000
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<unk>", "<s>", "</s>", "<|im_start|>"]
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.unk_token == "<unk>"
    ids = tok(MIXED, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == MIXED
    pieces = tok.tokenize("Er zijn 2024 bestanden")
    assert [p for p in pieces if any(c.isdigit() for c in p)] == ["2", "0", "2", "4"], "digits are split"
    assert "<|im_start|>" in tok.tokenize("a<|im_start|>b"), "special tokens are never split"
    if kind == "bpe":
        assert all(t in tok.get_vocab() for t in ("Ġ", "Ċ", "Ã")), "every byte is a token"
    else:
        assert tok("hoi")["input_ids"][0] == tok.bos_token_id
        assert "<0xF0>" in tok.tokenize("😀"), "unseen characters fall back to bytes"


def test_stats_table_and_json(corpus, smollm2_tok_dir, mistral_dir, tmp_path, capsys):
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(MIXED + "\n" + "Een twee drie vier\n")
    argv = ["tokenizer", "stats", "--tokenizer", str(smollm2_tok_dir), "--tokenizer", str(mistral_dir),
            "--corpus", str(corpus), "--corpus", str(mixed)]
    assert main(argv + ["--json", "--json-out", str(tmp_path / "stats.json")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "stats.json").read_text()) == rows
    assert [(r["tokenizer"], r["corpus"]) for r in rows] == [
        (str(t), str(c)) for t in (smollm2_tok_dir, mistral_dir) for c in (corpus, mixed)]
    for r in rows:
        assert r["bytes_per_token"] == pytest.approx(1 / r["tokens_per_byte"])
        assert 1 <= r["tokens_per_word"] < 10 and 0 <= r["words_split"] <= 1
        assert r["chars_per_token"] <= r["bytes_per_token"]
    smol_mixed, mistral_mixed = rows[1], rows[3]
    assert smol_mixed["fallback_rate"] == 0, "byte-level BPE has no fallback"
    assert mistral_mixed["fallback_rate"] > 0.05, "Mistral spells the emoji and CJK as bytes"
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["tokenizer", "corpus", "chars/tok"] and len(table) == 5
