"""LEP's "optimized" vocabulary: keep the base tokens most used on target text, refill with target-language tokens.

A kept token must stay reachable, so the merges that build it (and their parts, recursively) are kept too, as are
the alphabet (single characters, byte tokens) and every added/special token. The pruned tokenizer is renumbered
densely in old-id order, then extended (low priority) back to the requested size.
"""

from __future__ import annotations

from collections import Counter

from jaxadapt.errors import UserError
from jaxadapt.vocab.extend import extend
from jaxadapt.vocab.rebuild import with_vocab
from jaxadapt.vocab.surface import require_bpe
from jaxadapt.vocab.tokdir import BYTE_TOKEN, TokenizerDir


def optimize(base: TokenizerDir, texts: list[str], keep_fraction: float, vocab_size: int | None = None) -> TokenizerDir:
    """Keep keep_fraction of base's model tokens (by use on texts), refill to vocab_size (default: base's size)."""
    require_bpe(base, "optimize")
    if not 0 < keep_fraction <= 1:
        raise UserError(f"--optimize {keep_fraction}: expected a fraction of old tokens to keep in (0, 1]")
    target = vocab_size or base.size
    pruned = prune(base, _usage(base, texts), round(keep_fraction * len(base.model["vocab"])))
    if target <= pruned.size:
        raise UserError(f"--vocab-size {target}: the kept tokens alone need {pruned.size}; ask for more")
    return extend(pruned, texts, target - pruned.size)


def prune(base: TokenizerDir, usage: Counter, n_keep: int) -> TokenizerDir:
    """base with only its n_keep most used model tokens (plus the alphabet, special tokens and merge ancestors)."""
    maker: dict[str, tuple[str, str]] = {}
    for a, b in base.merges:  # the highest-priority merge that builds each token
        maker.setdefault(a + b, (a, b))
    model_vocab = base.model["vocab"]
    keep = {t["content"] for t in base.added}
    keep |= {t for t in model_vocab if len(t) == 1 or BYTE_TOKEN.fullmatch(t) or t == base.model.get("unk_token")}
    for tok in sorted(model_vocab, key=lambda t: (-usage[model_vocab[t]], model_vocab[t])):
        if len(keep) >= n_keep:
            break
        keep.add(tok)
    stack = list(keep)
    while stack:  # close over merge ancestors
        parts = maker.get(stack.pop(), ())
        for p in parts:
            if p not in keep:
                keep.add(p)
                stack.append(p)
    new_id = {tok: i for i, tok in enumerate(t for t in base.tokens if t is not None and t in keep)}
    merges = [(a, b) for a, b in base.merges if a in keep and b in keep and a + b in keep]
    vocab = {t: new_id[t] for t in model_vocab if t in keep}
    return with_vocab(base, vocab, merges, {t["content"]: new_id[t["content"]] for t in base.added})


def _usage(base: TokenizerDir, texts: list[str]) -> Counter:
    counts: Counter = Counter()
    for enc in base.tokenizer.encode_batch(texts, add_special_tokens=False):
        counts.update(enc.ids)
    return counts
