"""Trans-tokenization (Remy et al. 2024; ChocoLlama's tokenizer swap): the mapping file from parallel text.

The source side is tokenized by the old tokenizer, the target side by the new one, and each side's tokens are
grouped into words (a run of letters and digits, or one other character; a token belongs to the words its
characters overlap, so a token spanning two words joins them). Words are aligned (align.py). A link between a
target word of n new tokens and a source word of m old tokens spreads one count over their token pairs: half
uniformly (1/m to each old token), half by position (new token b to the old tokens whose share of the word
overlaps b's share). A target word linked to k source words gives each link 1/k.

p(old s | new t) = count(t, s) / count(t); entries below `min_prob` are dropped, at most `max_sources` kept, and
renormalised: the weights with which `vocab adapt --init mapping:FILE` averages old rows. New tokens aligned less
than `min_count` times are left out of the file, and `vocab adapt` gives them `mean` (FVT) rows; whatever the file
says, it copies the rows of special tokens (by name) and of tokens the old vocabulary has.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from jaxadapt import fs
from jaxadapt.errors import UserError
from jaxadapt.vocab.align import align_words, check_options
from jaxadapt.vocab.tokdir import TokenizerDir

WORD = re.compile(r"\w+|[^\w\s]")
MAX_UNK_SHARE = 0.5  # a tokenizer that spells more of a side's tokens as unknown does not fit that side's language


def word_units(tok: TokenizerDir, texts: Sequence[str], what: str) -> list[list[list[int]]]:
    """Per text, its words as lists of token ids (special and added tokens left out)."""
    skip = {tok.vocab[t["content"]] for t in tok.added if t["content"] in tok.vocab}
    unk = tok.vocab.get(tok.model["unk_token"]) if tok.model.get("unk_token") else tok.model.get("unk_id")  # Unigram
    out, n_unk, n_all = [], 0, 0
    for text, enc in zip(texts, tok.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
        spans = [m.span() for m in WORD.finditer(text)]
        ends = [e for _, e in spans]
        units: list[list[int]] = []
        last = -1  # the last word the current unit covers
        for tid, (s, e) in zip(enc.ids, enc.offsets):
            n_all += 1
            n_unk += tid == unk
            w = bisect.bisect_right(ends, s)  # the first word ending after the token starts
            if tid in skip or w == len(spans) or spans[w][0] >= max(e, s + 1):
                continue  # whitespace, or a special token
            if units and w <= last:
                units[-1].append(tid)
            else:
                units.append([tid])
            while w + 1 < len(spans) and spans[w + 1][0] < e:
                w += 1
            last = max(last, w)
        out.append(units)
    if n_all and n_unk / n_all > MAX_UNK_SHARE:
        raise UserError(f"{what}: {n_unk / n_all:.0%} of its tokens on this text are {tok.tokens[unk]!r}: it cannot "
                        "spell this language (is it the tokenizer of the other side?)")
    return out


def spread(counts: dict, tgt_unit: list[int], src_unit: list[int], weight: float) -> None:
    """Add one link's `weight` to counts[(new token, old token)]: half uniform, half by position in the word."""
    n, m = len(tgt_unit), len(src_unit)
    for b, t in enumerate(tgt_unit):
        for a, s in enumerate(src_unit):
            overlap = max(0.0, min((b + 1) / n, (a + 1) / m) - max(b / n, a / m)) * n
            counts[t, s] += weight * (0.5 / m + 0.5 * overlap)


def build_mapping(old: TokenizerDir, new: TokenizerDir, pairs: Sequence[tuple[str, str]], aligner: str = "eflomal",
                  iterations: int | None = None, min_count: float = 2.0, min_prob: float = 0.01,
                  max_sources: int = 32, seed: int = 0) -> tuple[dict[str, dict[str, float]], dict]:
    """{new token: {old token: weight}} from (source text, target text) pairs, and figures about it."""
    check_options(aligner, iterations)
    if min_count < 0 or not 0 <= min_prob < 1 or max_sources < 1:
        raise UserError(f"min_count={min_count}, min_prob={min_prob}, max_sources={max_sources}: expected "
                        "min_count >= 0, 0 <= min_prob < 1 and max_sources >= 1")
    src_units = word_units(old, [a for a, _ in pairs], "--source-tokenizer")
    tgt_units = word_units(new, [b for _, b in pairs], "--target-tokenizer")
    links = align_words([_types(u) for u in src_units], [_types(u) for u in tgt_units], aligner, iterations, seed)
    counts: dict[tuple[int, int], float] = defaultdict(float)
    n_links = 0
    for su, tu, lk in zip(src_units, tgt_units, links):
        n_links += len(lk)
        fan = np.bincount(lk[:, 1], minlength=len(tu)) if len(lk) else None
        for i, j in lk:
            spread(counts, tu[j], su[i], 1.0 / fan[j])
    rows: dict[int, dict[int, float]] = defaultdict(dict)
    for (t, s), c in counts.items():
        rows[t][s] = c
    special = {t["content"] for t in new.added}
    mapping = {}
    for t in sorted(rows):
        total = sum(rows[t].values())
        if total < min_count or new.tokens[t] in special:
            continue
        kept = sorted(((c / total, s) for s, c in rows[t].items() if c / total >= min_prob), reverse=True)
        kept = kept[:max_sources]
        norm = sum(p for p, _ in kept)
        mapping[new.tokens[t]] = {old.tokens[s]: round(float(p / norm), 6) for p, s in kept}
    if not mapping:
        raise UserError(f"no token of the new tokenizer was aligned at least {min_count} times to a token of the old "
                        f"one over {len(pairs)} pairs: are --parallel's files in the order SOURCE TARGET, and each "
                        "tokenizer the one of its side's language?")
    occurrences = [t for units in tgt_units for u in units for t in u]
    stats = {"pairs": len(pairs), "links": n_links, "aligned_new_tokens": len(rows), "mapped_new_tokens": len(mapping),
             "new_vocab": new.size,
             "mapped_share_of_target_tokens": round(sum(new.tokens[t] in mapping for t in occurrences)
                                                    / max(len(occurrences), 1), 4),
             "mean_sources_per_token": round(sum(map(len, mapping.values())) / len(mapping), 2)}
    return mapping, stats


def _types(units: list[list[int]]) -> list[str]:
    """The aligner's word types: a word is the token ids that spell it."""
    return ["_".join(map(str, u)) for u in units]


def write_mapping(path, mapping: dict[str, dict[str, float]]) -> None:
    """The JSON `--init mapping:FILE` reads, one new token a line, written whole or not at all."""
    with fs.atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write("{\n")
        fh.write(",\n".join(f"{json.dumps(t, ensure_ascii=False)}: {json.dumps(w, ensure_ascii=False)}"
                            for t, w in mapping.items()))
        fh.write("\n}\n")


def map_parallel(source_tokenizer, target_tokenizer, src_path: str, tgt_path: str, out, aligner: str = "eflomal",
                 iterations: int | None = None, min_count: float = 2.0, min_prob: float = 0.01,
                 max_sources: int = 32, seed: int = 0) -> dict:
    """`jaxadapt vocab map`: read both tokenizers and the parallel files, build the mapping, write it to `out`.
    Everything is checked before the aligner runs; nothing is written on error. Returns the figures."""
    from jaxadapt.data.parallel import read_parallel
    from jaxadapt.vocab.tokdir import read_tokenizer

    old, new = read_tokenizer(source_tokenizer), read_tokenizer(target_tokenizer)
    pairs = read_parallel(src_path, tgt_path)
    mapping, stats = build_mapping(old, new, pairs, aligner, iterations, min_count, min_prob, max_sources, seed)
    write_mapping(out, mapping)
    return stats
