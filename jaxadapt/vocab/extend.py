"""Extend a BPE tokenizer with tokens learned on target-language text, keeping every old id and string.

Low priority (Tejaswi et al.): merges are learned on top of the base's own segmentation (bpe_learn.py) and appended
after the old merges, so each fires exactly where it was counted. High priority (LEP's Llama-3 extension): a fresh
BPE is trained from characters and its merges go before the old ones; the old tokens it reaches keep their ids.
SentencePiece-style bases with byte fallback first gain the frequent characters they lacked (else those stay bytes).

Protected text (low priority only): every new merge also fires on other languages of the same script, and a language
the model is never trained on then meets tokens whose embeddings learn only target-language contexts (German
words split with Dutch merges). With protected corpora, a pair is ranked by its target count less `protect_weight`
times its count in the protected text scaled to the target's size, so merges the protected languages use as much
as the target are not learned.
"""

from __future__ import annotations

from collections import Counter

from jaxadapt.errors import UserError
from jaxadapt.vocab.bpe_learn import continue_bpe
from jaxadapt.vocab.fresh import alphabet, frequent_chars, train_bpe
from jaxadapt.vocab.surface import require_bpe
from jaxadapt.vocab.tokdir import BYTE_TOKEN, TokenizerDir
from jaxadapt.vocab.words import word_counts

PRIORITIES = ("low", "high")


def extend(base: TokenizerDir, texts: list[str], add: int, priority: str = "low", protect: list[str] = (),
           protect_weight: float = 1.0) -> TokenizerDir:
    """base plus `add` new tokens (ids base.size, base.size+1, ...) and the merges that produce them.

    protect: texts of languages whose segmentation the new merges should leave alone (see the module doc)."""
    how = require_bpe(base, "extend")
    if priority not in PRIORITIES:
        raise UserError(f"merge priority {priority!r}: expected one of {PRIORITIES}")
    if add < 1:
        raise UserError(f"--add {add}: expected a positive number of new tokens")
    if protect and priority != "low":
        raise UserError("--protect works with --merge-priority low only (high-priority merges come from a fresh "
                        "BPE trained from characters)")
    if protect_weight <= 0:
        raise UserError(f"--protect-weight {protect_weight}: expected a positive number")
    words = word_counts(base, texts)
    if priority == "low":
        new_tokens, merges = _learn_low(base, words, add, _penalties(base, texts, protect, protect_weight))
    else:
        new_tokens, merges = _learn_high(base, words, add, alphabet(words, how))
    if len(new_tokens) < add:
        raise UserError(f"the corpus yields only {len(new_tokens)} new tokens (pairs seen at least twice), not {add}: "
                        "give more text or ask for fewer")
    spec = base.copy_spec()
    vocab = spec["model"]["vocab"]
    # The tokenizers library ignores the ids tokenizer.json gives added tokens the model vocabulary lacks (Llama-3,
    # Qwen2) and numbers them from the model's token count; that count changes here, so pin them in the vocabulary.
    vocab.update({t["content"]: base.vocab[t["content"]] for t in base.added})
    for i, tok in enumerate(new_tokens):
        vocab[tok] = base.size + i
    spec["model"]["merges"] = [list(m) for m in merges]
    out = TokenizerDir(spec, base.source)
    check_preserved(base, out)
    return out


def _penalties(base: TokenizerDir, texts: list[str], protect: list[str], weight: float) -> dict[str, float]:
    """word -> negative weight: its protected count, scaled so both corpora weigh as if they were the same size."""
    if not protect:
        return {}
    size = sum(len(t.encode()) for t in protect)
    if size == 0:
        raise UserError("the protected corpora hold no text")
    scale = weight * sum(len(t.encode()) for t in texts) / size
    return {w: -scale * n for w, n in word_counts(base, protect).items()}


def _learn_low(base: TokenizerDir, words: Counter, add: int, penalties: dict[str, float]):
    chars = _new_chars(base, words)[:add]
    seg = base
    if chars:  # segment with the new characters in place, so merges can build on them
        spec = base.copy_spec()
        spec["model"]["vocab"].update({c: base.size + i for i, c in enumerate(chars)})
        seg = TokenizerDir(spec, base.source)
    model = seg.tokenizer.model
    unk = base.model.get("unk_token")

    def allowed(a: str, b: str) -> bool:  # bytes standing in for unknown characters never merge
        return not (BYTE_TOKEN.fullmatch(a) or BYTE_TOKEN.fullmatch(b) or unk in (a, b))

    weights = {w: float(n) for w, n in words.items()}
    for w, p in penalties.items():
        weights[w] = weights.get(w, 0.0) + p
    segs = ((tuple(t.value for t in model.tokenize(w)), n) for w, n in weights.items())
    learned = continue_bpe(segs, add - len(chars), set(seg.vocab), allowed)
    return chars + [a + b for a, b in learned], base.merges + learned


def _learn_high(base: TokenizerDir, words: Counter, add: int, chars: list[str]):
    new_chars = _new_chars(base, words)
    size = len(chars) + 2 * add + 1000
    while True:
        vocab, merges = train_bpe(words, size, chars)
        new_tokens, kept = _novel_prefix(base, new_chars, merges, add)
        if len(new_tokens) >= add or len(vocab) < size:  # enough, or the corpus has no more pairs to give
            break
        size *= 2
    first = set(kept)
    return new_tokens, kept + [m for m in base.merges if m not in first]


def _novel_prefix(base: TokenizerDir, new_chars: list[str], merges, add: int):
    """The first `add` tokens the base lacks (new characters, then the fresh merges' results), and the merges up to
    the last of them."""
    known = set(base.vocab)
    new = new_chars[:add]
    known.update(new)
    kept = []
    for a, b in merges:
        if len(new) == add:
            break
        if a in known and b in known:
            kept.append((a, b))
            if a + b not in known:
                new.append(a + b)
                known.add(a + b)
    return new, kept


def _new_chars(base: TokenizerDir, words: Counter) -> list[str]:
    """Frequent characters the base has no token for (SentencePiece bases spell them as bytes until then)."""
    return [c for c in frequent_chars(words) if c not in base.vocab]


def check_preserved(base: TokenizerDir, new: TokenizerDir) -> None:
    """Every token of base keeps its id and string, added tokens their flags; new ids follow the old maximum."""
    moved = [(t, i, new.vocab.get(t)) for t, i in base.vocab.items() if new.vocab.get(t) != i]
    if moved:
        raise RuntimeError(f"extension moved old tokens (token, old id, new id): {moved[:5]}")
    if new.added != base.added:
        raise RuntimeError("extension changed the added/special tokens")
    extra = sorted(i for t, i in new.vocab.items() if t not in base.vocab)
    if extra != list(range(base.size, base.size + len(extra))):
        raise RuntimeError("new token ids do not follow the old maximum contiguously")
