"""Give a model a new vocabulary: new embedding rows (and an untied LM head) initialised from the old ones.

Rows of tokens the old vocabulary has are copied bit-exactly; the rest come from transform.py. The matrices are
padded to a multiple of 128 (TPU tiles), so config.vocab_size exceeds the tokenizer's size; the padded rows are the
mean of the old rows and are never produced. The output is an HF dir with the new tokenizer and adaptation.json,
which tells the trainer's new-rows mode where the old rows end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxadapt.config import ModelConfig
from jaxadapt.config.model import check_dtype
from jaxadapt.errors import UserError
from jaxadapt.io.hf import read_config, resolve
from jaxadapt.io.rewrite import checkpoint_dtype, read_matrix, rewrite
from jaxadapt.vocab.tokdir import (
    TokenizerDir,
    TokenizerError,
    read_origin,
    read_tokenizer,
)
from jaxadapt.vocab.transform import AUX_K, AUX_METHODS, Transform, build_transform, read_mapping

ADAPTATION_FILE = "adaptation.json"
VOCAB_PAD = 128  # rows: vocabularies are padded to a multiple of this (TPU tiles)


def adapt(model_dir, tokenizer, init: str, out, old_tokenizer=None, pad_to: int = VOCAB_PAD, seed: int = 0,
          dtype: str | None = None, aux_corpus: list | None = None, aux_max_mb: float | None = None,
          aux_k: int = AUX_K, aux_mix: float = 1.0) -> Path:
    """Write `out`: model_dir's model with `tokenizer`'s vocabulary, new rows initialised by `init`.

    init: mean | wmean | merge | mean-all | random | mapping:FILE | focus | knn | omp. The old tokenizer is
    model_dir's own unless old_tokenizer is given. focus / knn / omp train auxiliary fastText vectors of the new
    tokens on aux_corpus (target-language text; at most aux_max_mb MB of each file), seeded by `seed`; knn / omp
    combine aux_k anchors per token; aux_mix < 1 blends each combined or mapped row with the token's wmean
    decomposition.
    Everything is checked before the model is loaded; nothing is written on error.
    """
    model_dir = resolve(model_dir)
    cfg = read_config(model_dir)
    try:
        old = read_tokenizer(old_tokenizer or model_dir)
    except TokenizerError as e:
        raise TokenizerError(f"{e} (the model's own tokenizer; pass --old-tokenizer if it lives elsewhere)") from None
    new = read_tokenizer(tokenizer)
    check_pair(model_dir, cfg, old, new, read_origin(new.source))
    if pad_to < 1:
        raise UserError(f"--pad-to {pad_to}: expected a positive multiple")
    if (init in AUX_METHODS) != bool(aux_corpus):
        raise UserError(f"--init {init} needs --aux-corpus (target-language text for its auxiliary vectors)"
                        if init in AUX_METHODS else f"--aux-corpus is used by --init {'/'.join(AUX_METHODS)} only, "
                                                    f"not by --init {init}")
    if aux_k < 1 or not 0.0 <= aux_mix <= 1.0:
        raise UserError(f"--aux-k {aux_k} / --aux-mix {aux_mix}: expected a positive number of anchors and a share "
                        "between 0 and 1")
    if aux_mix < 1 and not (init in AUX_METHODS or init.startswith("mapping:")):
        raise UserError(f"--aux-mix {aux_mix}: blends the rows of --init {'/'.join(AUX_METHODS)} or mapping:FILE with "
                        f"the wmean decomposition; --init {init} has nothing to blend")
    method, mapping, aux = init, None, None
    if init.startswith("mapping:"):
        method, mapping = "mapping", read_mapping(init.split(":", 1)[1], old, new)
    if init in AUX_METHODS:
        from jaxadapt.vocab.auxvec import train_aux
        from jaxadapt.vocab.corpus import read_corpora

        texts = read_corpora(aux_corpus, None if aux_max_mb is None else int(aux_max_mb * 2**20))
        aux = train_aux(new, texts, seed=seed)
    transform = build_transform(old, new, method, mapping, aux, aux_k, aux_mix)
    dtype = check_dtype(dtype or checkpoint_dtype(model_dir))

    padded = padded_size(new.size, pad_to)
    out_cfg = _remap_special_ids(cfg.replace(vocab_size=padded), old, new)
    replace = {"model.embed_tokens.weight": lambda: grow(read_matrix(model_dir, "model.embed_tokens.weight"),
                                                         transform, padded, seed)}
    if not cfg.tie_word_embeddings:  # HF stores the head as [vocab, hidden]: rows, as the embeddings
        replace["lm_head.weight"] = lambda: grow(read_matrix(model_dir, "lm_head.weight"), transform, padded, seed + 1)
    copied = transform.copy_from[: old.size]
    record = {
        "method": init, "old_vocab_size": old.size, "old_model_vocab_size": cfg.vocab_size,
        "new_vocab_size": new.size, "padded_vocab_size": padded, "pad_to": pad_to,
        "tied_embeddings": cfg.tie_word_embeddings,
        # True when ids below old_vocab_size are the old tokens with their old rows (an extension): the rows a
        # new-rows-only training run may touch start at old_vocab_size.
        "prefix_preserved": bool(new.size >= old.size and np.array_equal(copied, np.arange(old.size))),
        "counts": transform.counts(), "model": str(model_dir), "tokenizer": str(tokenizer),
        "old_tokenizer_fingerprint": old.fingerprint(), "seed": seed, "mix": aux_mix,
    }
    if mapping is not None:
        # a mapping entry for a token the old vocabulary already has loses to the bit-exact copy of its row
        kept = [t for t in mapping if transform.kinds[new.vocab[t]] == "mapping"]
        record["mapping"] = {"file": init.split(":", 1)[1], "entries": len(mapping), "used": len(kept),
                             "superseded_by_copy": len(mapping) - len(kept)}
    if aux is not None:
        record["aux"] = {"corpus": [str(c) for c in aux_corpus], "max_mb": aux_max_mb, "k": aux_k, "mix": aux_mix,
                         "tokens": int(aux.counts.sum()), "trained_vectors": int(aux.trained.sum())}
    return rewrite(model_dir, out, out_cfg, dtype, replace=replace, tokenizer=new.source,
                   extra_files={ADAPTATION_FILE: json.dumps(record, indent=2)})


def grow(old: np.ndarray, transform: Transform, padded: int, seed: int) -> np.ndarray:
    """The new vocabulary's rows [padded, hidden] from the old ones: the transform's, then padding rows."""
    return pad_rows(transform.apply(old, seed), padded, old[: transform.old_size])


def padded_size(n: int, multiple: int = VOCAB_PAD) -> int:
    return -(-n // multiple) * multiple


def pad_rows(m: np.ndarray, rows: int, mean_of: np.ndarray | None = None) -> np.ndarray:
    """`m` with rows appended up to `rows`: the mean of `mean_of`'s rows (default: m's), a row the model never
    produces (no token has its id) that stays inside the embedding's range."""
    if rows < m.shape[0]:
        raise ValueError(f"pad_rows: {m.shape[0]} rows do not fit in {rows}")
    mean = (m if mean_of is None else mean_of).mean(axis=0, dtype=np.float64)
    return np.concatenate([m, np.broadcast_to(mean, (rows - m.shape[0], m.shape[1])).astype(m.dtype)])


def check_pair(model_dir: Path, cfg: ModelConfig, old: TokenizerDir, new: TokenizerDir, origin: dict | None) -> None:
    """The model's own tokenizer must fit its embedding matrix, and a tokenizer jaxadapt derived from a base must have
    been derived from this model's tokenizer."""
    if old.size > cfg.vocab_size:
        raise UserError(f"{model_dir}: its tokenizer ({old.source}) has {old.size} tokens but the model only "
                        f"{cfg.vocab_size} embedding rows: the model and tokenizer do not belong together")
    base = (origin or {}).get("base_fingerprint")
    if base is not None and base != old.fingerprint():
        raise UserError(f"{new.source} was made from the tokenizer {origin.get('base')!r}, whose vocabulary differs "
                        f"from {model_dir}'s tokenizer ({old.source}): the model and tokenizer do not belong together")


def _remap_special_ids(cfg: ModelConfig, old: TokenizerDir, new: TokenizerDir) -> ModelConfig:
    """bos/eos/pad ids name tokens: follow those tokens to their new ids (None if the new vocabulary lacks one)."""
    def remap(i):
        if isinstance(i, list):
            return [j for j in map(remap, i) if j is not None]
        tok = old.tokens[i] if i is not None and 0 <= i < old.size else None
        return new.vocab.get(tok) if tok is not None else None

    return cfg.replace(bos_token_id=remap(cfg.bos_token_id), eos_token_id=remap(cfg.eos_token_id),
                       pad_token_id=remap(cfg.pad_token_id))
