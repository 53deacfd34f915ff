"""Sentence-aligned parallel text: built from Debian's LibreOffice help, read back for word alignment.

The help ships every page under the same path in each language and is translated paragraph by paragraph, so pages
pair by path (all 2548 en-nl pages; 2536 have as many paragraphs on both sides). Paragraphs are paired by a
length-based dynamic programme (Gale & Church 1993: 1-1, 1-0, 0-1, 2-1, 1-2 beads, lengths in characters), which
also finds the splits and merges of the other pages. Pages whose translation reorders its sections (a few large
Calc function lists) are recognised and dropped: by their beads, or by their numbers, which survive translation.
A paragraph pair whose two sides cut into the same number of sentences becomes that many sentence pairs: shorter
segments align better word by word.

The pages come from the cached Debian corpora (`debian.corpus`), so fetching, caching and HTML stripping are those
of `jaxadapt data fetch`. Pages held out for evaluation (`exclude`: e.g. a `data split` heldout.jsonl of the same
help) are left out on both sides, so that neither an alignment nor a mapping built from it has seen the text a model
is later scored on. Output: two line-aligned JSONL files (`text`, `source` = package:path#paragraph[.sentence])
and a JSON of counts and validation figures.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import log_ndtr

from jaxadapt import fs
from jaxadapt.fs import cache_dir
from jaxadapt.data.debian import PACKAGES, corpus
from jaxadapt.errors import UserError
from jaxadapt.io.atomic import atomic_dir
from jaxadapt.io.jsonl import json_object

# language -> its LibreOffice help package (the languages that have one)
HELP = {lang: pkg for lang, specs in PACKAGES.items() for pkg, _, _ in specs if pkg.startswith("libreoffice-help-")}
# Gale & Church's bead priors: 1-1 most paragraphs, a split/merge (2-1, 1-2) now and then, a dropped one rarely.
_BEADS = {(0, 1): 0.005, (1, 1): 0.89, (1, 0): 0.005, (2, 1): 0.05, (1, 2): 0.05}
_MOVES = list(_BEADS)  # (0, 1) first: the start cell (0, 0) has no bead, its back pointer is never followed
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(«„“]?[A-Z0-9\u00c0-\u00de\u0400-\u042f])")
VERSION = 2  # of the alignment: a change that moves segments bumps it, so a stale cache is not reused
MIN_ONE_TO_ONE = 0.9  # a page is kept when this share of its paragraphs pairs 1-1
MAX_NUMBERS_LOST = 0.3  # a page whose pairs lose their source numbers more often is dropped
_NUMBER = re.compile(r"\d+")
MIN_PAIRS_FOR_CHECK = 30  # read_parallel's alignment check needs this many pairs to say anything


@dataclass(frozen=True)
class Segment:
    src: str
    tgt: str
    source: str  # page path and paragraph (and sentence) index, the same on both sides


def held_out_pages(exclude: Sequence[str], pages: dict[str, dict[str, list[str]]]) -> set[str]:
    """The page paths whose whole text, in any of the languages of `pages` (lang -> path -> paragraphs), is one of
    the documents of the `exclude` files. A file that matches no page is refused: it is not what the user thinks."""
    from jaxadapt.data.split import corpus_name, read_texts

    by_text = {"\n\n".join(paras): path for lang_pages in pages.values() for path, paras in lang_pages.items()}
    found: set[str] = set()
    for path in exclude:
        if not fs.exists(path):
            raise UserError(f"--exclude {path}: no such file")
        docs = read_texts(corpus_name(path), path)
        hits = {by_text[d] for d in docs if d in by_text}
        if not hits:
            raise UserError(f"--exclude {path}: none of its {len(docs)} documents is a page of the "
                            f"{' or '.join(pages)} LibreOffice help; expected documents of that help as `data split` "
                            "writes them (e.g. the heldout.jsonl of `data split debian:nl`)")
        found |= hits
    return found


def help_pages(lang: str) -> dict[str, list[str]]:
    """page path -> its paragraphs, for the LibreOffice help of `lang` (from the cached Debian corpus)."""
    if lang not in HELP:
        raise UserError(f"parallel debian: no LibreOffice help for language {lang!r}; choose from {', '.join(HELP)}")
    prefix = HELP[lang] + ":"
    pages = {}
    with open(corpus(lang), encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["source"].startswith(prefix):
                pages[row["source"][len(prefix):]] = row["text"].split("\n\n")
    return pages


def length_model(pairs: list[tuple[int, int]]) -> tuple[float, float]:
    """Gale & Church's (c, s2): target characters per source character, and the variance of the difference per
    source character, estimated from pairs known to be translations."""
    c = sum(t for _, t in pairs) / max(sum(s for s, _ in pairs), 1)
    s2 = statistics.fmean((t - c * s) ** 2 / max(s, 1) for s, t in pairs) if pairs else 1.0
    return c, max(s2, 1e-3)


def align_paragraphs(src: list[str], tgt: list[str], model: tuple[float, float]) -> list[tuple[int, int, int, int]]:
    """The beads (i0, i1, j0, j1) pairing src[i0:i1] with tgt[j0:j1], in order, of least Gale-Church cost.

    Row by row in numpy: the beads that consume a source paragraph read earlier rows; runs of 0-1 beads (target
    paragraphs left unpaired) within a row are a prefix minimum."""
    c, s2 = model
    n, m = len(src), len(tgt)
    ls = np.concatenate([[0.0], np.cumsum([len(p) for p in src], dtype=np.float64)])
    lt = np.concatenate([[0.0], np.cumsum([len(p) for p in tgt], dtype=np.float64)])
    cost = np.full((n + 1, m + 1), np.inf)
    back = np.zeros((n + 1, m + 1), np.int8)  # index into _MOVES
    skip = _bead_cost(0.0, np.diff(lt), c, s2, _BEADS[(0, 1)])  # a 0-1 bead ending at target j (1..m)
    run_w = np.concatenate([[0.0], np.cumsum(skip)])
    for i in range(n + 1):
        cand = np.full((len(_MOVES), m + 1), np.inf)
        if i == 0:
            cand[0, 0] = 0.0
        for k, (di, dj) in enumerate(_MOVES):
            if 0 < di <= i:
                b = lt[dj:] - lt[: m + 1 - dj]
                cand[k, dj:] = cost[i - di, : m + 1 - dj] + _bead_cost(ls[i] - ls[i - di], b, c, s2, _BEADS[(di, dj)])
        best = cand.argmin(axis=0)
        base = cand[best, np.arange(m + 1)]
        run = run_w + np.minimum.accumulate(base - run_w)  # best over "base at some j' <= j, then 0-1 beads to j"
        skipped = run < base - 1e-9
        cost[i] = np.where(skipped, run, base)
        back[i] = np.where(skipped, _MOVES.index((0, 1)), best)
    if not np.isfinite(cost[n, m]):
        return []
    beads, i, j = [], n, m
    while i or j:
        di, dj = _MOVES[back[i, j]]
        beads.append((i - di, i, j - dj, j))
        i, j = i - di, j - dj
    return beads[::-1]


def _bead_cost(a, b, c: float, s2: float, prior: float):
    """-log P(bead): its prior and how far the target length b is from c times the source length a."""
    delta = np.abs(b - c * a) / np.sqrt(s2 * np.maximum((a + b / c) / 2, 1.0))
    return -math.log(prior) - (math.log(2.0) + log_ndtr(-delta))


def sentences(paragraph: str) -> list[str]:
    """A paragraph cut after . ! ? that a capital letter or digit follows."""
    return [s for s in _SENTENCE_END.split(paragraph) if s]


def parallel_segments(src_lang: str, tgt_lang: str, exclude: Sequence[str] = ()) -> tuple[list[Segment], dict]:
    """The aligned segments of two languages' LibreOffice help, and the figures that validate the alignment.

    Every page pair goes through the DP. A page is dropped when fewer than MIN_ONE_TO_ONE of its source paragraphs
    sit in 1-1 beads (a translation that reorders or rewrites its sections yields chains of 2-1 / 1-2 beads), or
    when its numbers say the order is wrong: numbers survive translation, yet more than MAX_NUMBERS_LOST of its
    pairs whose source side holds one (at least 5 such pairs) find none of them on the target side. A pair whose
    two sides both hold numbers but share none is misaligned and dropped on its own. Where both pages have as many
    paragraphs, the DP's pairing is compared with the structural one (paragraph k with paragraph k). Pages whose text
    is a document of an `exclude` file are left out before anything else (held_out_pages)."""
    if src_lang == tgt_lang:
        raise UserError(f"--langs {src_lang},{tgt_lang}: expected two different languages")
    src_pages, tgt_pages = help_pages(src_lang), help_pages(tgt_lang)
    held = held_out_pages(exclude, {src_lang: src_pages, tgt_lang: tgt_pages})
    paths = sorted((src_pages.keys() & tgt_pages.keys()) - held)
    same = [p for p in paths if len(src_pages[p]) == len(tgt_pages[p])]
    model = length_model([(len(a), len(b)) for p in same for a, b in zip(src_pages[p], tgt_pages[p])])
    beads: Counter = Counter()
    segments: list[Segment] = []
    dropped: dict[str, str] = {}
    agree = same_total = numbered = lost_total = clashing = 0
    for path in paths:
        a, b = src_pages[path], tgt_pages[path]
        found = align_paragraphs(a, b, model)
        one_to_one = [(i0, j0) for i0, i1, j0, j1 in found if i1 - i0 == 1 and j1 - j0 == 1]
        pairs = [(" ".join(a[i0:i1]), " ".join(b[j0:j1]), i0) for i0, i1, j0, j1 in found if i1 > i0 and j1 > j0]
        numbers = [_numbers(x, y) for x, y, _ in pairs]
        lost = [gone for held, gone, _ in numbers if held]
        if len(one_to_one) < MIN_ONE_TO_ONE * len(a):
            dropped[path] = "paragraphs do not pair 1-1"
            continue
        if len(lost) >= 5 and sum(lost) > MAX_NUMBERS_LOST * len(lost):
            dropped[path] = f"{sum(lost)} of {len(lost)} pairs lose the source side's numbers"
            continue
        if len(a) == len(b):
            agree += sum(i == j for i, j in one_to_one)
            same_total += len(a)
        beads.update(f"{i1 - i0}-{j1 - j0}" for i0, i1, j0, j1 in found)
        numbered += len(lost)
        lost_total += sum(lost)
        clashing += sum(clash for _, _, clash in numbers)
        for (x, y, i0), (_, _, clash) in zip(pairs, numbers):
            if not clash:
                segments += _split(x, y, f"{path}#{i0}")
    if not segments:
        raise UserError(f"parallel debian {src_lang}-{tgt_lang}: no page of the two help packages could be aligned "
                        f"({len(paths)} share a path)")
    stats = {
        "pages": {src_lang: len(src_pages), tgt_lang: len(tgt_pages), "paired_by_path": len(paths),
                  "same_paragraph_count": len(same), "kept": len(paths) - len(dropped), "dropped": dropped,
                  "excluded": sorted(held)},
        "length_model": {"c": round(model[0], 4), "s2": round(model[1], 3)},
        "beads": dict(sorted(beads.items())),
        "structural_agreement": round(agree / max(same_total, 1), 4),
        "numbers": {"pairs_with_a_source_number": numbered, "losing_them_all": lost_total,
                    "dropped_as_clashing": clashing},
        "segments": len(segments),
        "sentence_segments": sum("." in s.source.rsplit("#", 1)[1] for s in segments),
        **_ratio_stats(segments),
    }
    return segments, stats


def _numbers(a: str, b: str) -> tuple[bool, bool, bool]:
    """(the source side holds a number, none of them is on the target side, the target holds only other numbers)."""
    x, y = set(_NUMBER.findall(a)), set(_NUMBER.findall(b))
    gone = bool(x) and a != b and not x & y
    return bool(x) and a != b, gone, gone and bool(y)


def _split(a: str, b: str, source: str) -> list[Segment]:
    sa, sb = sentences(a), sentences(b)
    if len(sa) == len(sb) > 1:
        return [Segment(x, y, f"{source}.{k}") for k, (x, y) in enumerate(zip(sa, sb))]
    return [Segment(a, b, source)]


def _ratio_stats(segments: list[Segment]) -> dict:
    logs = [math.log((len(s.tgt) + 1) / (len(s.src) + 1)) for s in segments]
    return {"identical_segments": sum(s.src == s.tgt for s in segments),
            "log_length_ratio": {"mean": round(statistics.fmean(logs), 4), "sd": round(statistics.pstdev(logs), 4)},
            "length_ratio_within_half_to_double": round(sum(abs(x) <= math.log(2) for x in logs) / len(logs), 4)}


def file_names(src_lang: str, tgt_lang: str) -> tuple[str, str, str]:
    stem = f"debian-{src_lang}-{tgt_lang}"
    return f"{stem}.{src_lang}.jsonl", f"{stem}.{tgt_lang}.jsonl", f"{stem}.json"


def write_parallel(src_lang: str, tgt_lang: str, out, exclude: Sequence[str] = ()) -> tuple[Path, dict]:
    """Write the two line-aligned JSONL files and the figures into `out` (atomically, as one dir)."""
    segments, stats = parallel_segments(src_lang, tgt_lang, exclude)
    names = file_names(src_lang, tgt_lang)
    packages = HELP[src_lang], HELP[tgt_lang]
    with atomic_dir(out) as tmp:
        for name, side, package in ((names[0], "src", packages[0]), (names[1], "tgt", packages[1])):
            with open(tmp / name, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps({"text": getattr(s, side), "source": f"{package}:{s.source}"},
                                         ensure_ascii=False) + "\n" for s in segments)
        (tmp / names[2]).write_text(json.dumps(stats, indent=2) + "\n")
    return fs.path(out), stats


def cached(src_lang: str, tgt_lang: str) -> tuple[Path, Path]:
    """The two line-aligned files of a language pair, built on first use into the cache (as `debian.corpus`)."""
    where = cache_dir("corpora") / f"parallel-{src_lang}-{tgt_lang}-v{VERSION}"
    names = file_names(src_lang, tgt_lang)
    if not (where / names[2]).exists():
        write_parallel(src_lang, tgt_lang, where)
    return where / names[0], where / names[1]


def read_parallel(src_path: str, tgt_path: str) -> list[tuple[str, str]]:
    """Line-aligned segment pairs from two files (JSONL with a `text` field, or plain text, one segment a line).

    Refused: unreadable or empty files, different segment counts, and files whose lengths do not move together
    (shuffled or shifted by a line: the character lengths of true translations correlate at r > 0.8)."""
    src, tgt = _segments(src_path), _segments(tgt_path)
    if len(src) != len(tgt):
        raise UserError(f"--parallel: {src_path} has {len(src)} segments and {tgt_path} {len(tgt)}; the files must be "
                        "line-aligned (line i of one is the translation of line i of the other)")
    pairs = [(a, b) for a, b in zip(src, tgt) if a.strip() and b.strip()]
    if not pairs:
        raise UserError(f"--parallel: {src_path} and {tgt_path} hold no pair of non-empty segments")
    if len(pairs) >= MIN_PAIRS_FOR_CHECK:
        r = _log_length_correlation(pairs)
        if r < 0.5:
            raise UserError(f"--parallel: {src_path} and {tgt_path} do not look sentence-aligned: the lengths of their "
                            f"segments correlate at r={r:.2f} over {len(pairs)} pairs (translations: r > 0.8); are the "
                            "lines in the same order?")
    return pairs


def _segments(path: str) -> list[str]:
    if not fs.exists(path):
        raise UserError(f"--parallel: {path}: no such file")
    try:
        with fs.open_read(path) as fh:
            lines = fh.read().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"--parallel: {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not any(line.strip() for line in lines):
        raise UserError(f"--parallel: {path} is empty")
    if not str(path).endswith((".jsonl", ".json")):
        return lines
    out = []
    for k, line in enumerate(lines, 1):
        row = json_object(line, f"--parallel: {path}:{k}")
        if not isinstance(row.get("text"), str):
            raise UserError(f"--parallel: {path}:{k}: expected a string field 'text'")
        out.append(row["text"])
    return out


def _log_length_correlation(pairs: list[tuple[str, str]]) -> float:
    xs = [math.log(len(a) + 1) for a, _ in pairs]
    ys = [math.log(len(b) + 1) for _, b in pairs]
    try:
        return statistics.correlation(xs, ys)
    except statistics.StatisticsError:  # every segment of one side has the same length
        return 0.0
