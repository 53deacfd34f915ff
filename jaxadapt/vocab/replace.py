"""A stand-alone tokenizer for the target language in the base's pipeline (LEP "BPE", ChocoLlama's Dutch tokenizer).

It keeps the base's normaliser, pre-tokeniser, decoder, special tokens (first ids, base order), byte-fallback tokens
and chat template, so chat formatting and special-token roles carry over; only the learned vocabulary is new.
"""

from __future__ import annotations

from jaxadapt.errors import UserError
from jaxadapt.vocab.fresh import alphabet, train_bpe
from jaxadapt.vocab.rebuild import with_vocab
from jaxadapt.vocab.surface import require_bpe
from jaxadapt.vocab.tokdir import TokenizerDir
from jaxadapt.vocab.words import word_counts


def replace(base: TokenizerDir, texts: list[str], vocab_size: int) -> TokenizerDir:
    """A new BPE of at most vocab_size tokens (special and byte tokens included) learned on texts."""
    how = require_bpe(base, "replace")
    words = word_counts(base, texts)
    specials = [t["content"] for t in sorted(base.added, key=lambda t: t["id"])]
    in_model = set(base.model["vocab"])
    n_bytes = 256 if base.model.get("byte_fallback") else 0
    chars = alphabet(words, how)
    floor = len(specials) + n_bytes + len(chars)
    if vocab_size < floor:
        raise UserError(f"vocabulary size {vocab_size} is below the base alphabet: {len(specials)} special tokens"
                        + (", 256 byte tokens" if n_bytes else "") + f" and {len(chars)} characters need {floor}")
    added_ids = {s: i for i, s in enumerate(specials)}
    model_vocab = {s: added_ids[s] for s in specials if s in in_model}
    model_vocab.update({f"<0x{b:02X}>": len(specials) + b for b in range(n_bytes)})
    next_id = len(specials) + n_bytes
    learned, merges = train_bpe(words, vocab_size - next_id, chars)
    for tok, _ in sorted(learned.items(), key=lambda kv: kv[1]):
        if tok not in model_vocab and tok not in added_ids:
            model_vocab[tok] = next_id
            next_id += 1
    return with_vocab(base, model_vocab, merges, added_ids)
