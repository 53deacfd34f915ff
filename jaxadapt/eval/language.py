"""Language metrics of generated text (METHODS.md §6): %Gen, code-switching rate, copy-task scores.

They take generated ids / texts, so any generator can feed them.

Code-switching is detected two ways; a response counts as switched if either fires:
- script: a run of >= min_words consecutive words written in another script than the language's (Cyrillic in a
  Dutch answer, Latin in a Russian one). A word's script is the majority Unicode script of its letters; words
  without letters (numbers, punctuation, code symbols) neither break nor extend a run.
- language: a sentence of >= min_words words in the expected script that py3langid assigns to another language
  among `candidates` (probability >= min_prob). Sentence level, because identifiers are unreliable on a few words.
py3langid, because its model (langid.py's, 97 languages) ships inside the wheel: nothing is downloaded at run time,
it loads in well under a second and needs only numpy; lingua-language-detector is more accurate on short text but
its wheels carry much larger models.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from jaxadapt.errors import UserError

CYRILLIC_LANGS = frozenset({"ru", "uk", "be", "bg", "sr", "mk", "kk", "ky", "mn", "tg"})
GREEK_LANGS = frozenset({"el"})
CANDIDATES = ("nl", "en", "de", "fr", "es", "it", "pt", "ru", "uk", "pl")
# Languages whose script language_script knows and that py3langid identifies: the ones the metrics here are right for.
LANGS = frozenset(CANDIDATES) | CYRILLIC_LANGS | GREEK_LANGS
_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n+")


def old_vocab_size(model_dir: str | Path) -> int:
    """`old_vocab_size` from the adaptation.json that `jaxadapt vocab adapt` writes into a model dir."""
    f = Path(model_dir) / "adaptation.json"
    try:
        return int(json.loads(f.read_text())["old_vocab_size"])
    except FileNotFoundError:
        raise UserError(f"{f}: missing; give old_vocab_size explicitly for a model not made by vocab adapt") from None
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{f}: no integer 'old_vocab_size' ({e})") from None


def gen_share(generated_ids: Sequence[Sequence[int]], old_vocab: int) -> float:
    """%Gen (Tejaswi et al.): the share of generated tokens whose id is a new-vocabulary id (>= old_vocab)."""
    total = sum(len(ids) for ids in generated_ids)
    if not total:
        raise UserError("%Gen: no generated tokens")
    return sum(1 for ids in generated_ids for t in ids if t >= old_vocab) / total


def language_script(lang: str) -> str:
    """The script a language (ISO 639-1) is written in; Latin unless listed."""
    return "CYRILLIC" if lang in CYRILLIC_LANGS else "GREEK" if lang in GREEK_LANGS else "LATIN"


def word_script(word: str) -> str | None:
    """The majority Unicode script of the word's letters (CYRILLIC, LATIN, GREEK, CJK, ...); None without letters."""
    counts: dict[str, int] = {}
    for ch in word:
        if ch.isalpha():
            script = unicodedata.name(ch, "UNKNOWN").split()[0]
            counts[script] = counts.get(script, 0) + 1
    return max(counts, key=counts.get) if counts else None


def foreign_script_run(text: str, lang: str, min_words: int) -> bool:
    """A run of >= min_words consecutive words in another script than `lang`'s."""
    expected, run = language_script(lang), 0
    for word in text.split():
        script = word_script(word)
        if script is None:
            continue
        run = run + 1 if script != expected else 0
        if run >= min_words:
            return True
    return False


@lru_cache(maxsize=8)
def _identifier(candidates: tuple[str, ...]):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(candidates))
    return ident


def foreign_sentence(text: str, lang: str, min_words: int, candidates: Sequence[str] = CANDIDATES,
                     min_prob: float = 0.9) -> bool:
    """A sentence of >= min_words words in `lang`'s script that the identifier puts in another language."""
    ident = _identifier(tuple(sorted({lang, *candidates})))
    expected = language_script(lang)
    for sentence in _SENTENCE.split(text):
        words = [w for w in sentence.split() if word_script(w) == expected]
        if len(words) >= min_words:
            found, prob = ident.classify(" ".join(words))
            if found != lang and prob >= min_prob:
                return True
    return False


def switched(text: str, lang: str, min_words: int = 5, candidates: Sequence[str] = CANDIDATES) -> bool:
    """Whether one response leaves `lang` for >= min_words words (by script or by language identification)."""
    return foreign_script_run(text, lang, min_words) or foreign_sentence(text, lang, min_words, candidates)


def code_switching_rate(texts: Sequence[str], lang: str, min_words: int = 5,
                        candidates: Sequence[str] = CANDIDATES) -> float:
    """Share of responses with a run of >= min_words words in another script or language than `lang` (ISO 639-1)."""
    if not texts:
        raise UserError("code-switching rate: no responses")
    return sum(switched(t, lang, min_words, candidates) for t in texts) / len(texts)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def copy_scores(sources: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]], threshold: float = 0.99) -> dict:
    """The copy task (LEP's DaruCopy) on token ids: {length_ratio: mean of len(source) / len(output),
    lcs_share: share of outputs whose LCS with the source is >= threshold * len(source)}. An empty output has
    ratio inf."""
    if len(sources) != len(outputs) or not sources:
        raise UserError(f"copy task: {len(sources)} sources and {len(outputs)} outputs; expected as many, >= 1")
    ratios = [len(s) / len(o) if len(o) else float("inf") for s, o in zip(sources, outputs)]
    hits = [lcs_length(s, o) >= threshold * len(s) for s, o in zip(sources, outputs)]
    return {"length_ratio": sum(ratios) / len(ratios), "lcs_share": sum(hits) / len(hits)}
