"""Extending real tokenizers: old ids kept over the whole vocabulary, new tokens produced, text compressed."""

from __future__ import annotations

from transformers import AutoTokenizer
from vocabhelpers import MIXED

from jaxadapt.vocab import (
    corpus_stats,
    extend,
    optimize,
    read_tokenizer,
    replace,
    write_tokenizer_dir,
)


def assert_extends(old, new_dir, added: int):
    """Every id of `old` (a transformers tokenizer) keeps its token, over the whole old vocabulary."""
    new = AutoTokenizer.from_pretrained(str(new_dir))
    n = len(old)
    assert len(new) == n + added
    ids = list(range(n))
    assert new.convert_ids_to_tokens(ids) == old.convert_ids_to_tokens(ids)
    assert new.all_special_tokens == old.all_special_tokens
    assert new.chat_template == old.chat_template
    assert [str(t) for t in new.added_tokens_decoder.values()] == [str(t) for t in old.added_tokens_decoder.values()]
    return old, new


def roundtrips(tok, text=MIXED) -> bool:
    return tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_smollm2_extension_keeps_ids_and_compresses_dutch(smollm2_tok_dir, smollm2_hf_tok, smollm2_ext, dutch,
                                                          english, capsys):
    base = read_tokenizer(smollm2_tok_dir)
    held, english = dutch[1][:150], english[:150]
    rates = {0: (corpus_stats(base, held).tokens_per_byte, corpus_stats(base, english).tokens_per_byte)}
    for n, d in smollm2_ext.items():
        new = assert_extends(smollm2_hf_tok, d, n)[1]
        assert roundtrips(new)
        tok = read_tokenizer(d)
        rates[n] = (corpus_stats(tok, held).tokens_per_byte, corpus_stats(tok, english).tokens_per_byte)
        # the new tokens are produced: most of them occur when encoding the text they were learned on
        used = {i for e in tok.tokenizer.encode_batch_fast(dutch[0][:400]) for i in e.ids if i >= base.size}
        assert len(used) > 0.5 * n
    with capsys.disabled():
        print("\nSmolLM2 tokens/byte (nl held-out, en):",
              {n: (round(a, 4), round(b, 4)) for n, (a, b) in rates.items()})
    (nl0, en0), (nl1, en1), (nl5, en5) = rates[0], rates[1000], rates[5000]
    assert nl1 < 0.85 * nl0 and nl5 < 0.95 * nl1, "Dutch gets clearly cheaper, more so with more tokens"
    assert abs(en1 / en0 - 1) < 0.05 and abs(en5 / en0 - 1) < 0.06, "English barely changes"


def test_protected_extension_leaves_german_alone(smollm2_tok_dir, smollm2_ext, dutch, german, tmp_path):
    """Dutch merges also split German words; protecting German keeps its segmentation close to the base's while
    Dutch still compresses as much (measured: German tokens/byte +1.6% unprotected, +0.2% protected)."""
    import json

    from jaxadapt.cli import main

    base = read_tokenizer(smollm2_tok_dir)
    nl_held, de_held = dutch[1][:150], german[1][:150]
    rate = lambda tok, texts: corpus_stats(tok, texts).tokens_per_byte  # noqa: E731
    plain = read_tokenizer(smollm2_ext[1000])
    corpus, protect = tmp_path / "nl.jsonl", tmp_path / "de.jsonl"
    for path, docs in ((corpus, dutch[0]), (protect, german[0])):
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "protected"
    assert main(["tokenizer", "extend", "--base", str(smollm2_tok_dir), "--corpus", str(corpus), "--add", "1000",
                 "--protect", str(protect), "--out", str(out)]) == 0
    origin = json.loads((out / "jaxadapt_tokenizer.json").read_text())
    assert origin["protect"] == [str(protect)] and origin["protect_weight"] == 1.0
    guarded = read_tokenizer(out)
    assert guarded.vocab == {**guarded.vocab, **base.vocab}, "old ids kept"
    de0, de_plain, de_guarded = rate(base, de_held), rate(plain, de_held), rate(guarded, de_held)
    assert 1 - de_plain / de0 > 3 * (1 - de_guarded / de0), "German changes far less with protection"
    assert rate(guarded, nl_held) < 1.03 * rate(plain, nl_held), "Dutch compresses about as well"
    strong = extend(base, dutch[0], 1000, protect=german[0], protect_weight=4.0)
    assert rate(strong, de_held) >= rate(guarded, de_held), "a heavier weight protects at least as much"


def test_sentencepiece_extension_low_and_high(mistral_dir, dutch, tmp_path):
    base = read_tokenizer(mistral_dir)
    old = AutoTokenizer.from_pretrained(mistral_dir)
    for priority in ("low", "high"):
        tok = extend(base, dutch[0][:150], 300, priority)
        out = write_tokenizer_dir(tmp_path / priority, tok, {"mode": "extend"})
        old, new = assert_extends(old, out, 300)
        text = "Het vertaalprogramma opent de werkbalk met 3 opties; Привет мир"
        assert roundtrips(new, text) and roundtrips(new)
        assert new(text)["input_ids"][0] == old.bos_token_id, "the BOS post-processor survives"
        assert corpus_stats(tok, dutch[1][:50]).tokens_per_byte < 0.95 * corpus_stats(base, dutch[1][:50]).tokens_per_byte
        assert any(i >= 32000 for e in tok.tokenizer.encode_batch_fast(dutch[1][:50]) for i in e.ids)
    assert any(t.startswith("▁") for t in tok.tokens[32000:]), "SentencePiece spelling of the new tokens"


def test_high_priority_extension_keeps_ids(smollm2_tok_dir, smollm2_hf_tok, dutch, tmp_path):
    """LEP places the new merges first: old ids still hold, Dutch gets cheaper."""
    base = read_tokenizer(smollm2_tok_dir)
    tok = extend(base, dutch[0][:300], 500, "high")
    out = write_tokenizer_dir(tmp_path / "high", tok, {"mode": "extend"})
    assert_extends(smollm2_hf_tok, out, 500)
    new_tokens = set(tok.tokens[base.size:])
    first_new = min(i for i, (a, b) in enumerate(tok.merges) if a + b in new_tokens)
    assert first_new < 1000 < len(base.merges), "the new merges come before the old ones"
    assert corpus_stats(tok, dutch[1][:50]).tokens_per_byte < corpus_stats(base, dutch[1][:50]).tokens_per_byte


def test_replace_keeps_special_tokens_and_chat_template(smollm2_tok_dir, smollm2_hf_tok, dutch, tmp_path):
    base = read_tokenizer(smollm2_tok_dir)
    tok = replace(base, dutch[0][:400], 4000)
    out = write_tokenizer_dir(tmp_path / "repl", tok, {"mode": "replace"})
    old, new = smollm2_hf_tok, AutoTokenizer.from_pretrained(str(out))
    assert len(new) == 4000
    assert new.all_special_tokens == old.all_special_tokens
    assert new.convert_ids_to_tokens(list(range(len(base.added)))) == [t["content"] for t in base.added]
    chat = [{"role": "user", "content": "Hoe laat is het?"}]
    assert new.apply_chat_template(chat, tokenize=False) == old.apply_chat_template(chat, tokenize=False)
    assert roundtrips(new)
    assert corpus_stats(tok, dutch[1]).tokens_per_byte < corpus_stats(base, dutch[1]).tokens_per_byte


def test_optimize_keeps_frequent_tokens_and_refills(mistral_dir, dutch, tmp_path):
    base = read_tokenizer(mistral_dir)
    tok = optimize(base, dutch[0][:400], 0.9)
    assert tok.size == base.size
    kept = [t for t in base.tokens if t in tok.vocab]
    assert [tok.vocab[t] for t in kept] == list(range(len(kept))), "kept tokens stay in old order, densely"
    assert {"▁de", "▁het", "▁een", "<0x0A>", "<s>"} <= set(kept)
    out = write_tokenizer_dir(tmp_path / "opt", tok, {"mode": "optimize"})
    new = AutoTokenizer.from_pretrained(str(out))
    assert roundtrips(new) and new.bos_token == "<s>" and new("x")["input_ids"][0] == new.bos_token_id
    assert corpus_stats(tok, dutch[1]).tokens_per_byte < corpus_stats(base, dutch[1]).tokens_per_byte
