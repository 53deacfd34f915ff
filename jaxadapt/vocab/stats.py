"""How efficiently tokenizers encode each corpus (METHODS.md §1): the numbers vocabulary adaptation is judged by.

Every non-empty line is encoded on its own, without BOS/EOS, so the numbers do not depend on document lengths or a
tokenizer's special tokens. Words are whitespace-separated; a word's split is how the tokenizer encodes it after a
space (mid-sentence), which is how most words occur.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

from jaxadapt.vocab.surface import midsentence
from jaxadapt.vocab.tokdir import BYTE_TOKEN, TokenizerDir


@dataclass(frozen=True)
class Stats:
    tokens: int
    chars_per_token: float
    bytes_per_token: float
    tokens_per_byte: float
    tokens_per_word: float  # fertility
    tokens_per_line: float  # Tejaswi et al.'s fertility per sentence, with lines as sentences
    words_split: float  # share of word occurrences encoded as 2 or more tokens
    fallback_rate: float  # share of tokens that are byte-fallback <0xNN> or the unknown token

    def as_dict(self) -> dict:
        return asdict(self)


def corpus_stats(tok: TokenizerDir, texts: list[str]) -> Stats:
    """How `tok` encodes the non-empty lines of `texts`."""
    lines = [ln for t in texts for ln in t.split("\n") if ln.strip()]
    encodings = tok.tokenizer.encode_batch_fast(lines, add_special_tokens=False)
    n_tokens = sum(len(e.ids) for e in encodings)
    n_chars = sum(len(ln) for ln in lines)
    n_bytes = sum(len(ln.encode()) for ln in lines)
    words = Counter(w for ln in lines for w in ln.split())
    n_words = sum(words.values())
    mid = midsentence(tok.spec)
    unique = list(words)
    split = sum(words[w] for w, e in zip(unique, mid.encode_batch_fast([" " + w for w in unique],
                                                                          add_special_tokens=False)) if len(e.ids) > 1)
    fallback = _fallback_ids(tok)
    n_fallback = sum(1 for e in encodings for i in e.ids if i in fallback)
    return Stats(tokens=n_tokens, chars_per_token=n_chars / max(n_tokens, 1), bytes_per_token=n_bytes / max(n_tokens, 1),
                 tokens_per_byte=n_tokens / max(n_bytes, 1), tokens_per_word=n_tokens / max(n_words, 1),
                 tokens_per_line=n_tokens / max(len(lines), 1), words_split=split / max(n_words, 1),
                 fallback_rate=n_fallback / max(n_tokens, 1))


def _fallback_ids(tok: TokenizerDir) -> set[int]:
    ids = set()
    if tok.model.get("byte_fallback"):
        ids |= {i for t, i in tok.vocab.items() if BYTE_TOKEN.fullmatch(t)}
    unk_id = tok.model.get("unk_id")  # Unigram names its unknown token by id, BPE by string
    unk = tok.tokens[unk_id] if unk_id is not None else tok.model.get("unk_token")
    if unk is not None and unk in tok.vocab:
        ids.add(tok.vocab[unk])
    return ids


def format_table(rows: list[tuple[str, str, Stats]]) -> str:
    """rows of (tokenizer, corpus, stats) as an aligned text table."""
    head = ["tokenizer", "corpus", "chars/tok", "bytes/tok", "tok/word", "tok/line", "words split", "fallback"]
    body = [[t, c, f"{s.chars_per_token:.3f}", f"{s.bytes_per_token:.3f}", f"{s.tokens_per_word:.3f}",
             f"{s.tokens_per_line:.2f}", f"{s.words_split:.1%}", f"{s.fallback_rate:.2%}"] for t, c, s in rows]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    return "\n".join("  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
                     for r in [head] + body)
