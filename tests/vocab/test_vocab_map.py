"""Trans-tokenization (`jaxadapt vocab map`): word alignment of real English-Dutch help text into translation
weights per new token, the mapping file read back by `vocab adapt --init mapping:FILE`, and bad input refused with
nothing written."""

from __future__ import annotations

import json
import random
import shutil
from collections import defaultdict

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxadapt.cli import main
from jaxadapt.data.parallel import cached, read_parallel
from jaxadapt.vocab import read_tokenizer, replace, write_tokenizer_dir
from jaxadapt.vocab.align import align_words
from jaxadapt.vocab.transform import read_mapping
from jaxadapt.vocab.transtok import build_mapping, spread, word_units, write_mapping

# Dutch words of the help and the English word a translator would give, for the aligned sample to get right.
BUCKET = "jaxadapt-transtok"
GLOSSARY = {"Ġbestand": "Ġfile", "Ġvenster": "Ġwindow", "Ġtabel": "Ġtable", "Ġcel": "Ġcell", "Ġknop": "Ġbutton",
            "Ġkolom": "Ġcolumn", "Ġrij": "Ġrow", "Ġtekst": "Ġtext", "Ġpictogram": "Ġicon", "Ġlettertype": "Ġfont",
            "Ġalinea": "Ġparagraph", "Ġvoor": "Ġfor", "Ġniet": "Ġnot", "Ġhet": "Ġthe", "Ġen": "Ġand", "Ġvan": "Ġof"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """Every 40th pair of the real en-nl help (~2,000 pairs) as two JSONL files, and a Dutch BPE of 4,000 tokens
    learned on the Dutch side (SmolLM2's pipeline, vocabulary replaced)."""
    from jaxadapt.assets import smollm2_dir

    src, tgt = cached("en", "nl")
    pairs = read_parallel(str(src), str(tgt))[::40]
    d = tmp_path_factory.mktemp("transtok")
    for name, side in (("en.jsonl", 0), ("nl.jsonl", 1)):
        (d / name).write_text("".join(json.dumps({"text": p[side]}, ensure_ascii=False) + "\n" for p in pairs),
                              encoding="utf-8")
    old = read_tokenizer(smollm2_dir())
    new_dir = write_tokenizer_dir(d / "nl-bpe", replace(old, [b for _, b in pairs], 4000), {"mode": "replace"})
    return {"dir": d, "pairs": pairs, "old_dir": smollm2_dir(), "new_dir": new_dir, "old": old,
            "new": read_tokenizer(new_dir)}


def test_words_group_tokens(sample):
    old, new = sample["old"], sample["new"]
    text = "De macro's kunnen vanuit een LibreOffice-document (Writer, Calc, ...) worden aangeroepen."
    units = word_units(new, [text], "new")[0]
    spelled = ["".join(new.tokens[t] for t in u) for u in units]
    assert spelled[:4] == ["De", "Ġmacro", "'s", "Ġkunnen"] and "ĠLibreOffice" in spelled and "." == spelled[-1]
    assert "".join(spelled).replace("Ġ", " ") == text  # every token in exactly one word, in order
    units = word_units(old, ["LibreOffice  mainly\n"], "old")[0]
    assert [[old.tokens[t] for t in u] for u in units] == [["Lib", "re", "Office"], ["Ġmainly"]]  # spaces dropped


def test_spread_gives_each_link_one_count():
    counts = defaultdict(float)
    spread(counts, [10, 11], [1, 2, 3], 1.0)
    assert sum(counts.values()) == pytest.approx(2.0)  # two new tokens, one count each
    # the first new token covers the first half of the word: 2/3 of it is old token 1, 1/3 old token 2
    assert counts[10, 1] == pytest.approx(0.5 / 3 + 0.5 * 2 / 3)
    assert counts[10, 2] == pytest.approx(0.5 / 3 + 0.5 * 1 / 3) and counts[10, 3] == pytest.approx(0.5 / 3)
    assert counts[11, 3] == counts[10, 1]


def test_aligner_links_words_of_real_pairs(sample):
    pairs = sample["pairs"][:600]
    words = [([w.lower() for w in a.split()], [w.lower() for w in b.split()]) for a, b in pairs]
    links = align_words([s for s, _ in words], [t for _, t in words], "fast_align")
    assert len(links) == len(pairs)
    linked = {(s[i], t[j]) for (s, t), lk in zip(words, links) for i, j in lk}
    assert {("table", "tabel"), ("and", "en"), ("the", "de")} <= linked
    assert all(lk[:, 0].max() < len(s) and lk[:, 1].max() < len(t) for (s, t), lk in zip(words, links) if len(lk))


@pytest.mark.parametrize("aligner", ["eflomal", "fast_align"])
def test_real_sample_translates_dutch_tokens(sample, aligner):
    mapping, stats = build_mapping(sample["old"], sample["new"], sample["pairs"], aligner, iterations=8)
    assert stats["mapped_new_tokens"] > 2000 and stats["mapped_share_of_target_tokens"] > 0.9
    top = {t: max(mapping[t], key=mapping[t].get) for t in GLOSSARY if t in mapping}
    assert len(top) == len(GLOSSARY)
    right = [t for t in GLOSSARY if top[t] == GLOSSARY[t]]
    assert len(right) >= len(GLOSSARY) - 1, {t: top[t] for t in GLOSSARY if t not in right}
    for weights in mapping.values():
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-4) and len(weights) <= 32
        assert min(weights.values()) >= 0.01 - 1e-6
    assert not set(mapping) & {t["content"] for t in sample["new"].added}


def test_mapping_round_trip_into_vocab_adapt(sample, hf_dir, tmp_path, capsys):
    d = sample["dir"]
    out = tmp_path / "map.json"
    assert main(["vocab", "map", "--source-tokenizer", str(sample["old_dir"]), "--target-tokenizer",
                 str(sample["new_dir"]), "--parallel", str(d / "en.jsonl"), str(d / "nl.jsonl"), "--out", str(out),
                 "--aligner", "fast_align", "--iterations", "3"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"wrote {out}: ") and "new tokens mapped" in said
    old, new = sample["old"], sample["new"]
    mapping = read_mapping(out, old, new)  # the reader `--init mapping:FILE` uses accepts every entry
    assert "Ġbestand" in mapping

    model_dir, _ = hf_dir("llama_gqa", vocab_size=old.size)  # untied: embeddings and LM head both remapped
    for f in sample["old_dir"].iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, model_dir / f.name)
    adapted = tmp_path / "adapted"
    assert main(["vocab", "adapt", "--model", str(model_dir), "--tokenizer", str(sample["new_dir"]),
                 "--init", f"mapping:{out}", "--out", str(adapted)]) == 0
    record = json.loads((adapted / "adaptation.json").read_text())
    mapped = [t for t in mapping if t not in old.vocab]  # tokens the old vocabulary has are copied instead
    assert record["counts"]["mapping"] == len(mapped)
    assert record["mapping"] == {"file": str(out), "entries": len(mapping), "used": len(mapped),
                                 "superseded_by_copy": len(mapping) - len(mapped)} and len(mapped) < len(mapping)
    assert f"{len(mapping) - len(mapped)} of the mapping's {len(mapping)} entries name tokens the old vocabulary " \
           "has" in capsys.readouterr().out
    before, after = load_file(model_dir / "model.safetensors"), load_file(adapted / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        rows = random.Random(0).sample(mapped, 50)
        want = np.stack([sum(w * before[name][old.vocab[o]].astype(np.float64) for o, w in mapping[t])
                         for t in rows])
        np.testing.assert_allclose(after[name][[new.vocab[t] for t in rows]], want, rtol=1e-5, atol=1e-6)
        copied = next(t for t in mapping if t in old.vocab)
        np.testing.assert_array_equal(after[name][new.vocab[copied]], before[name][old.vocab[copied]])

    # --aux-mix blends each mapped row with the token's wmean decomposition (the wmean init's row)
    for init, extra in (("wmean", []), (f"mapping:{out}", ["--aux-mix", "0.25"])):
        assert main(["vocab", "adapt", "--model", str(model_dir), "--tokenizer", str(sample["new_dir"]),
                     "--init", init, "--out", str(tmp_path / init[:5]), *extra]) == 0
    wmean = load_file(tmp_path / "wmean" / "model.safetensors")
    mixed = load_file(tmp_path / "mappi" / "model.safetensors")
    ids = [new.vocab[t] for t in mapped]
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        want = 0.25 * after[name][ids].astype(np.float64) + 0.75 * wmean[name][ids].astype(np.float64)
        np.testing.assert_allclose(mixed[name][ids], want, rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "mappi" / "adaptation.json").read_text())["mix"] == 0.25


def _wordlevel_tokenizer(path):
    """A word-level Russian tokenizer without byte fallback: Dutch text is all `[UNK]` to it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]", "привет", "мир", "файл", "окно", "и", "в", "не", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    return path


def test_bad_input_writes_nothing(sample, tmp_path, capsys):
    d = sample["dir"]
    en, nl = str(d / "en.jsonl"), str(d / "nl.jsonl")
    lines = (d / "nl.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "short.jsonl").write_text("".join(lines[:-5]), encoding="utf-8")
    (tmp_path / "shuffled.jsonl").write_text("".join(random.Random(0).sample(lines, len(lines))), encoding="utf-8")
    (tmp_path / "empty.jsonl").write_text("")
    ru = _wordlevel_tokenizer(tmp_path / "ru-words")
    out = tmp_path / "map.json"
    old, new = str(sample["old_dir"]), str(sample["new_dir"])
    cases = [
        ([en, str(tmp_path / "short.jsonl")], {}, "the files must be line-aligned"),
        ([en, str(tmp_path / "empty.jsonl")], {}, "empty.jsonl is empty"),
        ([en, str(tmp_path / "missing.jsonl")], {}, "missing.jsonl: no such file"),
        ([en, str(tmp_path / "shuffled.jsonl")], {}, "do not look sentence-aligned"),
        ([en, nl], {"--target-tokenizer": str(ru)}, "of its tokens on this text are '[UNK]': it cannot spell"),
        ([en, nl], {"--min-count": "1e9", "--aligner": "fast_align", "--iterations": "1"},
         "no token of the new tokenizer was aligned at least"),
        ([en, nl], {"--aligner": "giza"}, "--aligner 'giza': expected one of eflomal, fast_align"),
    ]
    for parallel, extra, match in cases:
        opts = {"--source-tokenizer": old, "--target-tokenizer": new, **extra}
        args = ["vocab", "map", *[x for kv in opts.items() for x in kv], "--parallel", *parallel, "--out", str(out)]
        assert main(args) == 2, match
        assert match in capsys.readouterr().err
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "ru-words", "short.jsonl", "shuffled.jsonl"]

    out.write_text("{}")  # an existing file is not replaced without --overwrite
    assert main(["vocab", "map", "--source-tokenizer", old, "--target-tokenizer", new, "--parallel", en, nl,
                 "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == "{}"


def test_mapping_for_another_tokenizer_is_refused_by_adapt(sample, hf_dir, tmp_path, capsys):
    """A mapping names the new tokenizer's tokens: used with another new tokenizer, `vocab adapt` names the first
    unknown one and writes nothing."""
    mapping, _ = build_mapping(sample["old"], sample["new"], sample["pairs"][:300], "fast_align")
    write_mapping(tmp_path / "map.json", mapping)
    other = write_tokenizer_dir(tmp_path / "other", replace(sample["old"], [b for _, b in sample["pairs"][:200]], 600),
                                {"mode": "replace"})
    model_dir, _ = hf_dir("llama_tied", vocab_size=sample["old"].size)
    for f in sample["old_dir"].iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, model_dir / f.name)
    out = tmp_path / "adapted"
    assert main(["vocab", "adapt", "--model", str(model_dir), "--tokenizer", str(other),
                 "--init", f"mapping:{tmp_path / 'map.json'}", "--out", str(out)]) == 2
    assert "is not a token of the new tokenizer" in capsys.readouterr().err
    assert not out.exists()


def test_parallel_text_and_mapping_in_a_bucket(sample, gcs, capsys):
    """`vocab map` reads its pairs from gs:// and writes the mapping there; an existing mapping object is refused
    before the aligner runs and left as it was."""
    fs, _ = gcs
    d = sample["dir"]
    for name in ("en.jsonl", "nl.jsonl"):
        fs.pipe(f"{BUCKET}/par/{name}", (d / name).read_bytes())
    url = f"gs://{BUCKET}/out/map.json"
    args = ["vocab", "map", "--source-tokenizer", str(sample["old_dir"]), "--target-tokenizer",
            str(sample["new_dir"]), "--parallel", f"gs://{BUCKET}/par/en.jsonl", f"gs://{BUCKET}/par/nl.jsonl",
            "--out", url, "--aligner", "fast_align", "--iterations", "1"]
    assert main(args) == 0
    written = fs.cat(url)
    assert "Ġbestand" in json.loads(written)
    capsys.readouterr()
    assert main(args) == 2
    assert f"--out {url}: exists; pass --overwrite" in capsys.readouterr().err
    assert fs.cat(url) == written
