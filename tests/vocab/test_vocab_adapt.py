"""Giving models a new vocabulary: exact copies, mean rows as transformers computes them, tied and untied heads,
and the real SmolLM2 predicting Dutch far better with mean-initialised rows than with random ones."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from vocabhelpers import bits_per_byte

from jaxadapt.cli import main
from jaxadapt.io.hf import load_pretrained
from jaxadapt.vocab import (
    adapt,
    read_tokenizer,
    train,
    write_tokenizer_dir,
)


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


def _mean_rows(matrix, old_tok, new_tok, tokens):
    """The mean of the old rows of the old tokenizer's split of each token's text, as transformers sees it."""
    out = []
    for t in tokens:
        text = new_tok.convert_tokens_to_string([t])
        ids = old_tok(text, add_special_tokens=False)["input_ids"]
        out.append(matrix[ids].double().mean(0))
    return torch.stack(out)


@pytest.mark.parametrize("family", ["llama_tied", "llama_gqa", "qwen3", "gemma2", "gemma3"])
def test_tiny_model_tied_and_untied(family, hf_dir, dutch, english, tmp_path):
    model_dir, old_model = hf_dir(family)  # vocab 300
    old_spec, config = train(english[:100], 300, "bpe")
    write_tokenizer_dir(tmp_path / "oldtok", old_spec, {"mode": "train"}, config=config)
    for f in (tmp_path / "oldtok").iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    corpus = _jsonl(tmp_path / "nl.jsonl", dutch[0][:100])
    assert main(["tokenizer", "extend", "--base", str(model_dir), "--corpus", str(corpus), "--add", "40",
                 "--out", str(tmp_path / "ext")]) == 0
    origin = json.loads((tmp_path / "ext" / "jaxadapt_tokenizer.json").read_text())
    assert origin["mode"] == "extend" and origin["base_vocab_size"] == 300 and origin["added"] == 40
    out = tmp_path / "adapted"
    assert main(["vocab", "adapt", "--model", str(model_dir), "--tokenizer", str(tmp_path / "ext"),
                 "--init", "mean", "--out", str(out)]) == 0

    record = json.loads((out / "adaptation.json").read_text())
    assert record["old_vocab_size"] == 300 and record["new_vocab_size"] == 340 and record["padded_vocab_size"] == 384
    assert record["prefix_preserved"] and record["counts"]["mean"] == 40
    new_model = AutoModelForCausalLM.from_pretrained(out).eval()
    old_tok, new_tok = AutoTokenizer.from_pretrained(model_dir), AutoTokenizer.from_pretrained(out)
    assert len(new_tok) == 340 and new_model.config.vocab_size == 384
    assert new_model.config.tie_word_embeddings == old_model.config.tie_word_embeddings
    new_tokens = new_tok.convert_ids_to_tokens(list(range(300, 340)))
    pairs = [(old_model.get_input_embeddings().weight, new_model.get_input_embeddings().weight)]
    if not old_model.config.tie_word_embeddings:
        pairs.append((old_model.lm_head.weight, new_model.lm_head.weight))
    for old_w, new_w in pairs:
        assert torch.equal(new_w[:300], old_w), "old rows are copied bit-exactly"
        torch.testing.assert_close(new_w[300:340].double(), _mean_rows(old_w, old_tok, new_tok, new_tokens),
                                   rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(new_w[340:].double(), old_w.double().mean(0).expand(44, -1), rtol=1e-6, atol=1e-7)
    ids = torch.tensor([old_tok("Hello world, this is a test.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(new_model(ids).logits[..., :300], old_model(ids).logits), "old tokens predict as before"


def test_smollm2_mean_rows_and_bits_per_byte(smollm2_tok_dir, smollm2_hf_tok, smollm2_ext, dutch, tmp_path, capsys):
    """Mean rows equal transformers' decomposition means; Dutch bits/byte: mean far below random, before training."""
    new = read_tokenizer(smollm2_ext[1000])
    out = tmp_path / "mean"
    assert main(["vocab", "adapt", "--model", str(smollm2_tok_dir), "--tokenizer", str(smollm2_ext[1000]),
                 "--init", "mean", "--out", str(out)]) == 0
    old_emb, new_emb = (load_file(d / "model.safetensors")["model.embed_tokens.weight"] for d in (smollm2_tok_dir, out))
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] and config["vocab_size"] == 49152 + 1024 and new_emb.shape == (50176, 576)
    assert torch.equal(new_emb[:49152], old_emb)
    old_hf, new_hf = smollm2_hf_tok, AutoTokenizer.from_pretrained(out)
    sample = [t for t in new.tokens[49152::10] if "\ufffd" not in new_hf.convert_tokens_to_string([t])]
    rows = [new.vocab[t] for t in sample]
    torch.testing.assert_close(new_emb[rows].double(), _mean_rows(old_emb, old_hf, new_hf, sample),
                               rtol=1e-5, atol=1e-6)

    texts = [d[:600] for d in dutch[1][::75]]
    mean_model = load_pretrained(out)
    adapt(smollm2_tok_dir, smollm2_ext[1000], "random", tmp_path / "random")
    random_model = load_pretrained(tmp_path / "random")
    bpb = {name: bits_per_byte(m, new.tokenizer, texts, start_id=0)
           for name, m in (("mean", mean_model), ("random", random_model))}
    with capsys.disabled():
        print(f"\nSmolLM2 +1K, Dutch bits/byte before training: {bpb}")
    assert bpb["mean"] < 0.7 * bpb["random"]
