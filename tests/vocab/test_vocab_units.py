"""The pieces on their own: continued BPE, surface strings, the initialisation transform's methods."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxadapt.errors import UserError
from jaxadapt.vocab import build_transform, train
from jaxadapt.vocab.adapt import pad_rows, padded_size
from jaxadapt.vocab.bpe_learn import continue_bpe
from jaxadapt.vocab.surface import BYTE_LEVEL, METASPACE, spell, style, token_bytes
from jaxadapt.vocab.tokdir import TokenizerDir
from jaxadapt.vocab.transform import read_mapping


def test_continue_bpe_counts_from_the_given_segmentation():
    words = [(("l", "o", "w"), 5), (("l", "o", "w", "er"), 2), (("n", "e", "w", "er"), 6), (("w", "i", "d", "er"), 3)]
    taken = {"l", "o", "w", "er", "n", "e", "i", "d"}
    # (w, er) 11 times; then (l, o) 7; then a tie at 6 goes to the smaller pair; counts follow each merge
    assert continue_bpe(words, 5, taken) == [("w", "er"), ("l", "o"), ("e", "wer"), ("n", "ewer"), ("lo", "w")]
    # a pair whose result is already a token is never learned
    assert ("l", "o") not in continue_bpe(words, 5, taken | {"lo"})
    assert continue_bpe(words, 5, taken, allowed=lambda a, b: "er" not in (a, b))[0] == ("l", "o")
    # pairs seen fewer than min_count times are not learned
    assert continue_bpe([(("a", "b"), 9), (("c", "d"), 1)], 5, taken={"a", "b", "c", "d", "ab"}) == []


def test_continue_bpe_protected_words_veto_shared_pairs():
    taken = {"d", "e", "r", "a", "s", "t", "o"}
    target = [(("d", "e"), 10), (("a", "s"), 6), (("t", "o"), 3)]
    # (d, e) is the target's most frequent pair, but protected text uses it as much: it is ranked last or dropped
    assert continue_bpe(target, 3, taken) == [("d", "e"), ("a", "s"), ("t", "o")]
    assert continue_bpe(target + [(("d", "e", "r"), -9.0)], 3, taken) == [("a", "s"), ("t", "o")]
    assert continue_bpe(target + [(("d", "e", "r"), -5.0)], 3, taken) == [("a", "s"), ("d", "e"), ("t", "o")]
    # a pair that goes below zero keeps its count: merging the protected word elsewhere lifts it back
    words = [(("d", "e"), 4), (("r", "d", "e"), -5.0), (("r", "d"), 7)]
    assert continue_bpe(words, 2, taken) == [("r", "d"), ("d", "e")]


def test_surface_bytes_round_trip():
    assert token_bytes("Ġwereld", BYTE_LEVEL) == b" wereld"
    assert token_bytes("â̦", BYTE_LEVEL) != b""
    assert spell(" привет".encode(), BYTE_LEVEL) == "ĠÐ¿ÑĢÐ¸Ð²ÐµÑĤ"
    assert token_bytes("ĠÐ¿ÑĢÐ¸Ð²ÐµÑĤ", BYTE_LEVEL).decode() == " привет"
    assert token_bytes("▁wereld", METASPACE) == b" wereld" and token_bytes("<0x0A>", METASPACE) == b"\n"


@pytest.fixture(scope="module")
def toy():
    """A 300-token byte-level old tokenizer and a SentencePiece-style new one with merges, sharing some words."""
    text = ["de kat en de hond, de kat en de muis; het huis en de tuin"] * 30
    old, _ = train(text, 300, "bpe")
    new, _ = train(text + ["katten honden muizen huizen tuinen"] * 30, 400, "spm-bpe")
    return old, new


def test_transform_methods(toy):
    old, new = toy
    assert style(old.spec) == BYTE_LEVEL and style(new.spec) == METASPACE
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(old.size + 5, 8)).astype(np.float32)  # 5 padding rows the tokenizer never produces
    mean = build_transform(old, new, "mean")
    rows = mean.apply(emb)
    assert rows.shape == (new.size, 8)
    # "▁de" exists in the old vocabulary as "Ġde": copied bit-exactly across spelling conventions
    assert mean.kinds[new.vocab["▁de"]] == "copy" and np.array_equal(rows[new.vocab["▁de"]], emb[old.vocab["Ġde"]])
    # byte tokens of the new tokenizer are the old byte-level characters
    assert np.array_equal(rows[new.vocab["<0x41>"]], emb[old.vocab["A"]])
    kat = new.vocab["▁katten"]
    parts = [old.vocab[t] for t in old.tokenizer.encode(" katten", add_special_tokens=False).tokens]
    assert mean.kinds[kat] == "mean" and np.allclose(rows[kat], emb[parts].mean(0), atol=1e-6)
    assert np.allclose(rows[new.vocab["<unk>"]], emb[: old.size].mean(0), atol=1e-6), "a new special: mean of all"
    # merge: halves down the new tokenizer's merge tree
    merge = build_transform(old, new, "merge")
    a, b = next((a, b) for a, b in new.merges if a + b == "▁katten")
    expect = (merge.apply(emb)[new.vocab[a]] + merge.apply(emb)[new.vocab[b]]) / 2
    assert merge.kinds[kat] == "merge" and np.allclose(merge.apply(emb)[kat], expect, atol=1e-6)
    wmean = build_transform(old, new, "wmean").apply(emb)[kat]
    assert not np.allclose(wmean, rows[kat]) and np.allclose(build_transform(old, new, "wmean").matrix.sum(1), 1)
    assert np.allclose(build_transform(old, new, "mean-all").apply(emb)[kat], emb[: old.size].mean(0), atol=1e-6)
    drawn = build_transform(old, new, "random").apply(emb, seed=3)[kat]
    assert not np.allclose(drawn, rows[kat]) and abs(drawn.std() - emb[: old.size].std()) < 1.0
    # the sparse matrix is T itself: T @ [E; mean(E)] gives the non-random rows
    ext = np.vstack([emb[: old.size], emb[: old.size].mean(0)]).astype(np.float64)
    assert np.allclose(mean.matrix @ ext, rows, atol=1e-6)


def test_mapping_file(toy, tmp_path):
    old, new = toy
    f = tmp_path / "map.json"
    f.write_text(json.dumps({"▁katten": {"Ġde": 0.25, "Ġkat": 0.75}}))
    t = build_transform(old, new, "mapping", read_mapping(f, old, new))
    emb = np.random.default_rng(1).normal(size=(old.size, 4))
    assert np.allclose(t.apply(emb)[new.vocab["▁katten"]],
                       0.25 * emb[old.vocab["Ġde"]] + 0.75 * emb[old.vocab["Ġkat"]])
    assert t.kinds[new.vocab["▁honden"]] == "mean", "tokens the file does not name fall back to mean"
    for entry, message in (({"Ġde": "x"}, "weight 'x'"), ({"Ġde": -0.5}, "weight -0.5, expected a finite number >= 0"),
                           ({"Ġde": 0, "Ġkat": 0.0}, "sum to 0")):
        f.write_text(json.dumps({"▁katten": entry}))
        with pytest.raises(UserError, match=message):
            read_mapping(f, old, new)


def test_extend_base_with_added_tokens_beyond_the_model_vocabulary(tmp_path):
    """Llama-3 / Qwen2 keep special tokens outside the BPE vocabulary (ids after it): new ids follow those."""
    from transformers import AutoTokenizer

    from jaxadapt.vocab import extend, write_tokenizer_dir

    text = ["the cat sat on the mat with the hat"] * 20
    tok, config = train(text, 280, "bpe", special_tokens=[])
    t = tok.tokenizer
    t.add_special_tokens(["<|begin_of_text|>", "<|eot_id|>"])
    spec = json.loads(t.to_str())
    spec["model"]["ignore_merges"] = True
    base = TokenizerDir(spec)
    n = len(spec["model"]["vocab"])
    assert base.vocab["<|eot_id|>"] == n + 1 and "<|eot_id|>" not in spec["model"]["vocab"]
    new = extend(base, ["de kat zat op de mat met de hoed"] * 20, 10)
    assert [new.vocab[t] for t in new.tokens[n + 2:]] == list(range(n + 2, n + 12))
    out = write_tokenizer_dir(tmp_path / "ext", new, {"mode": "extend"}, config=config)
    hf = AutoTokenizer.from_pretrained(out)
    ids = hf("<|begin_of_text|>de kat<|eot_id|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == n and ids[-1] == n + 1 and any(i >= n + 2 for i in ids)


def test_decomposing_partial_characters(toy):
    """A byte-level token may end inside a character: its bytes still split into old tokens."""
    from jaxadapt.vocab.surface import Decomposer

    old, new = toy
    cut = " п".encode()[:-1]  # a space and half of a Cyrillic letter
    assert Decomposer(old)(cut) == [old.vocab["Ġ"], old.vocab["Ð"]]
    assert Decomposer(new)(b" de" + cut[1:]) == [new.vocab["▁de"], new.vocab["<0xD0>"]], "byte fallback"
    assert Decomposer(new)(b" de") == [new.vocab["▁de"]], "mid-sentence: the space is the word's own ▁"
    assert Decomposer(new)(b"de") == [new.vocab["de"]], "no ▁ is prepended"


def test_padding_rows_are_one_mean_row_for_adapt_and_propagate():
    """vocab adapt pads with the mean of the old rows, LEP's propagate with the mean of the propagated ones: one
    function, rows appended, the real rows untouched, the dtype kept."""
    m = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    assert padded_size(300) == 384 and padded_size(384) == 384 and padded_size(5, 4) == 8
    out = pad_rows(m, 384)
    assert out.shape == (384, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:300], m)
    np.testing.assert_allclose(out[300:], np.broadcast_to(m.astype(np.float64).mean(0), (84, 8)), rtol=1e-6)
    other = np.ones((10, 8), np.float32)
    np.testing.assert_array_equal(pad_rows(m, 301, mean_of=other)[300], np.ones(8, np.float32))
    np.testing.assert_array_equal(pad_rows(m, 300), m)
    with pytest.raises(ValueError, match="300 rows do not fit in 299"):
        pad_rows(m, 299)
