"""Parallel text from Debian's LibreOffice help: pages paired by path, paragraphs by a length DP, sentences cut
where both sides agree; the figures that validate it on the real English-Dutch help; bad parallel files refused."""

from __future__ import annotations

import json
import random

import pytest

from jaxadapt.cli import main
from jaxadapt.data.parallel import (
    align_paragraphs,
    cached,
    help_pages,
    length_model,
    read_parallel,
    sentences,
)
from jaxadapt.errors import UserError


@pytest.fixture(scope="module")
def en_nl(tmp_path_factory):
    """`jaxadapt data parallel debian --langs en,nl` on the real help (cached corpora; ~10 s): (dir, figures)."""
    out = tmp_path_factory.mktemp("parallel") / "en-nl"
    assert main(["data", "parallel", "debian", "--langs", "en,nl", "--out", str(out)]) == 0
    return out, json.loads((out / "debian-en-nl.json").read_text())


def test_real_english_dutch_help_aligns(en_nl):
    out, stats = en_nl
    pages = stats["pages"]
    assert pages["en"] == pages["nl"] == pages["paired_by_path"] > 2500
    assert pages["kept"] >= 0.99 * pages["paired_by_path"]
    # Validation: where both pages have as many paragraphs, the length DP (not told so) pairs paragraph k with
    # paragraph k; the dropped pages are those whose translation reorders its sections (checked by hand).
    assert stats["structural_agreement"] > 0.98
    assert "scalc/01/04060181.html" in pages["dropped"] and len(pages["dropped"]) < 30
    # numbers survive translation: on kept pages, pairs whose source holds one rarely lose them all
    assert stats["numbers"]["losing_them_all"] < 0.03 * stats["numbers"]["pairs_with_a_source_number"]
    assert stats["beads"]["1-1"] > 0.99 * sum(stats["beads"].values())
    assert stats["length_ratio_within_half_to_double"] > 0.97 and 1.05 < stats["length_model"]["c"] < 1.25
    assert stats["segments"] > 70_000 and stats["sentence_segments"] > 10_000

    en = [json.loads(x) for x in (out / "debian-en-nl.en.jsonl").open(encoding="utf-8")]
    nl = [json.loads(x) for x in (out / "debian-en-nl.nl.jsonl").open(encoding="utf-8")]
    assert len(en) == len(nl) == stats["segments"]
    assert all(a["source"].split(":", 1)[1] == b["source"].split(":", 1)[1] for a, b in zip(en, nl))
    assert en[0]["source"].startswith("libreoffice-help-en-us:") and nl[0]["source"].startswith("libreoffice-help-nl:")
    pairs = {(a["text"], b["text"]) for a, b in zip(en, nl)}
    for pair in [("Choose Table - Properties.", "Kies Tabel - Eigenschappen."),  # spot checks, read in the help
                 ("Repeating a Table Heading on a New Page", "Een tabelkop op een nieuwe pagina herhalen"),
                 ('Now press a letter, such as "e".', 'Druk nu op een letter, bijvoorbeeld op "e".')]:
        assert pair in pairs
    # a random sample of translated segments: the function words of each language on its own side
    rng = random.Random(0)
    sample = [(a["text"], b["text"]) for a, b in rng.sample(list(zip(en, nl)), 400) if a["text"] != b["text"]]
    assert _with_words([a for a, _ in sample], ["the", "to", "of"]) > 0.5 * len(sample)
    assert _with_words([b for _, b in sample], ["de", "het", "van", "een"]) > 0.5 * len(sample)
    assert _with_words([b for _, b in sample], ["the", "and", "with"]) < 0.05 * len(sample)
    assert read_parallel(str(out / "debian-en-nl.en.jsonl"), str(out / "debian-en-nl.nl.jsonl"))[0] == \
        (en[0]["text"], nl[0]["text"])


def _with_words(texts: list[str], words: list[str]) -> int:
    """How many texts hold at least one of the words."""
    return sum(any(f" {w} " in f" {t.lower()} " for w in words) for t in texts)


def test_paragraph_dp_on_real_pages():
    """A real page whose Dutch translation splits one paragraph in two, and a synthetic dropped paragraph."""
    en, nl = help_pages("en"), help_pages("nl")
    model = length_model([(len(a), len(b)) for p in list(en)[:300] if len(en[p]) == len(nl[p])
                          for a, b in zip(en[p], nl[p])])
    a, b = en["sbasic/guide/sample_code.html"], nl["sbasic/guide/sample_code.html"]
    assert (len(a), len(b)) == (19, 20)
    beads = align_paragraphs(a, b, model)
    assert beads[0] == (0, 1, 0, 2) and beads[1:] == [(k, k + 1, k + 1, k + 2) for k in range(1, 19)]
    page = en["swriter/guide/borders.html"], nl["swriter/guide/borders.html"]
    assert align_paragraphs(*page, model) == [(k, k + 1, k, k + 1) for k in range(len(page[0]))]
    dropped = page[1][:3] + page[1][4:]  # the fourth Dutch paragraph missing: the pairing shifts by one after it
    beads = align_paragraphs(page[0], dropped, model)
    assert beads[:3] == [(k, k + 1, k, k + 1) for k in range(3)] and (3, 4, 3, 4) not in beads
    assert beads[-44:] == [(k, k + 1, k - 1, k) for k in range(5, len(page[0]))]


def test_sentences_cut_only_before_a_capital():
    assert sentences("Kies Tabel. Klik op OK! Bijv. de cel. 2 opties?") == \
        ["Kies Tabel.", "Klik op OK!", "Bijv. de cel.", "2 opties?"]
    assert sentences("e.g. a value. or not") == ["e.g. a value. or not"]


def test_cached_pair_is_built_once():
    src, tgt = cached("en", "nl")
    assert src.name == "debian-en-nl.en.jsonl" and tgt.name == "debian-en-nl.nl.jsonl"
    stamp = src.stat().st_mtime_ns
    assert cached("en", "nl") == (src, tgt) and src.stat().st_mtime_ns == stamp


def _lines(path, texts, jsonl=True):
    path.write_text("".join((json.dumps({"text": t}, ensure_ascii=False) if jsonl else t) + "\n" for t in texts),
                    encoding="utf-8")
    return str(path)


def test_bad_parallel_files(tmp_path):
    en = [f"Choose item {i} in the menu and click {'OK' * (1 + i % 7)}." for i in range(40)]
    nl = [f"Kies item {i} in het menu en klik op {'OK' * (1 + i % 7)}." for i in range(40)]
    src, tgt = _lines(tmp_path / "en.jsonl", en), _lines(tmp_path / "nl.jsonl", nl)
    assert len(read_parallel(src, tgt)) == 40
    assert read_parallel(_lines(tmp_path / "en.txt", en, False), _lines(tmp_path / "nl.txt", nl, False))[3] == \
        (en[3], nl[3])
    cases = [
        ((src, _lines(tmp_path / "short.jsonl", nl[:-1])), "has 40 segments and .* 39; the files must be line-aligned"),
        ((src, _lines(tmp_path / "empty.jsonl", [])), "empty.jsonl is empty"),
        ((src, str(tmp_path / "missing.jsonl")), "missing.jsonl: no such file"),
        ((src, _lines(tmp_path / "shuffled.jsonl", random.Random(1).sample(nl, 40))),
         "do not look sentence-aligned: .* correlate at r=.* over 40 pairs"),
        ((src, _lines(tmp_path / "shifted.jsonl", nl[1:] + nl[:1])), "do not look sentence-aligned"),
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(['{"text": "a"}', '{"text": 1}'] + ['{"text": "b"}'] * 38) + "\n")
    cases.append(((src, str(tmp_path / "bad.jsonl")), r"bad.jsonl:2: expected a string field 'text'"))
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": \n' + '{"text": "b"}\n' * 38)
    cases.append(((src, str(tmp_path / "broken.jsonl")), r"broken.jsonl:2: invalid JSON"))
    blank = _lines(tmp_path / "blank.jsonl", [" "] * 40)
    cases.append(((src, blank), "hold no pair of non-empty segments"))
    for args, match in cases:
        with pytest.raises(UserError, match=match):
            read_parallel(*args)


@pytest.mark.parametrize("args, match", [
    (["books", "--langs", "en,nl"], "unknown corpus 'books'; available: debian"),
    (["debian", "--langs", "en"], "--langs 'en': expected two languages"),
    (["debian", "--langs", "en,en"], "expected two different languages"),
    (["debian", "--langs", "en,fr"], "no LibreOffice help for language 'fr'; choose from nl, en, ru, de"),
])
def test_data_parallel_bad_options_write_nothing(args, match, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "parallel", *args, "--out", str(out)]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_held_out_pages_are_left_out(en_nl, tmp_path, capsys):
    """The pages of a `data split` held-out file are paired on neither side, so a mapping never sees scored text."""
    from jaxadapt.data.split import split_corpus

    split_corpus("debian:nl", tmp_path / "split", 0.03, 20)
    held = [json.loads(x)["text"] for x in (tmp_path / "split" / "heldout.jsonl").open(encoding="utf-8")]
    out = tmp_path / "pairs"
    assert main(["data", "parallel", "debian", "--langs", "en,nl", "--out", str(out),
                 "--exclude", str(tmp_path / "split" / "heldout.jsonl")]) == 0
    assert "left out 20 held-out pages" in capsys.readouterr().out
    stats = json.loads((out / "debian-en-nl.json").read_text())
    excluded = stats["pages"]["excluded"]
    assert len(excluded) == len(held) == 20
    assert stats["pages"]["paired_by_path"] == en_nl[1]["pages"]["paired_by_path"] - 20
    nl_pages = help_pages("nl")
    assert {"\n\n".join(nl_pages[p]) for p in excluded} == set(held)
    sources = {json.loads(x)["source"].split(":", 1)[1].split("#")[0]
               for x in (out / "debian-en-nl.nl.jsonl").open(encoding="utf-8")}
    assert sources and not sources & set(excluded)

    unrelated = _lines(tmp_path / "other.jsonl", ["A document that is no page of the help at all."])
    assert main(["data", "parallel", "debian", "--langs", "en,nl", "--out", str(tmp_path / "none"),
                 "--exclude", unrelated]) == 2
    err = capsys.readouterr().err
    assert "--exclude " in err and "other.jsonl: none of its 1 documents is a page of the en or nl" in err
    assert not (tmp_path / "none").exists()
