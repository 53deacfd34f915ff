"""Which parameters train, and how fast: a filter over the model's parameter paths, plus per-group update scales.

Frozen parameters stay out of the optimizer entirely (no Adam moments), which is what makes LoRA and
embeddings-only training cheap in memory. Within what trains, `update_scales` gives each group its learning-rate
multiplier (`optim.groups`): the embedding and LM-head rows per row (old vocabulary vs rows added by vocab
adapt), LoRA factors and the rest of the body per leaf. A multiplier of 0 freezes: the gradient is zeroed before
clipping and Adam, and the parameter is kept as it was, bit for bit. `new_rows` is embeddings with the old rows
at 0. With `optim.embedding_updates: seen` the rows of tokens absent from a step's batch get 0 for that step.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from jaxadapt.errors import UserError
from jaxadapt.model import LoRAParam
from jaxadapt.sharding import path_str
from jaxadapt.train.config import RunConfig, trainable_parts

EMBED, HEAD = "model/embed_tokens/embedding", "lm_head/kernel"
EMBEDDING_PATHS = (EMBED, HEAD)  # rows (embedding) and columns (LM head kernel) are per token


def trainable_filter(spec: str):
    """An nnx filter (path, variable) -> bool for the parts named in `spec`."""
    parts = trainable_parts(spec)

    def keep(path, var) -> bool:
        if not isinstance(var, nnx.Param):
            return False
        if isinstance(var, LoRAParam):
            return "lora" in parts
        if "full" in parts:
            return True
        return path_str(path) in EMBEDDING_PATHS and bool(parts & {"embeddings", "new_rows"})

    return keep


def split_trainable(model, spec: str):
    """(graphdef, trainable nnx.State, frozen nnx.State)."""
    graphdef, trainable, frozen = nnx.split(model, trainable_filter(spec), ...)
    if not jax.tree.leaves(trainable):
        raise UserError(f"train.trainable={spec!r} selects no parameter of this model"
                        + (" (no LoRA factors attached)" if "lora" in spec else ""))
    return graphdef, trainable, frozen


def old_vocab_size(model_dir: str | Path | None, configured: int | None) -> int:
    """The configured value, else `old_vocab_size` from the model dir's adaptation.json (written by vocab adapt)."""
    if configured is not None:
        return configured
    f = Path(model_dir or "") / "adaptation.json"
    if not f.exists():
        raise UserError(f"train.trainable includes new_rows but train.old_vocab_size is not set and {f} does not "
                        "exist (vocab adapt writes it)")
    try:
        record = json.loads(f.read_text())
        size = int(record["old_vocab_size"])
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise UserError(f"{f}: no integer 'old_vocab_size' ({e})") from None
    if record.get("prefix_preserved") is False:
        raise UserError(f"{f}: the vocabulary was replaced, not extended, so ids below old_vocab_size are not the old "
                        "tokens; new_rows cannot tell old rows from new ones (train 'embeddings' instead)")
    return size


def resolve_old_vocab(cfg: RunConfig) -> int | None:
    """Where the old rows end: required for `new_rows`; for `optim.groups` with different old / new row rates, the
    configured value or the model dir's adaptation.json, and None (every row is old) for a model without one."""
    from jaxadapt.train.modelload import checkpoint_dir

    parts = trainable_parts(cfg.train.trainable)
    g = cfg.optim.groups
    if "new_rows" not in parts and not (parts & {"embeddings", "full"} and g.old_rows != g.new_rows):
        return None
    if cfg.train.old_vocab_size is not None:
        return cfg.train.old_vocab_size
    home = checkpoint_dir(cfg.model.path) or Path(cfg.model.path)  # a hub id's snapshot; a preset has no record
    if "new_rows" in parts or (home / "adaptation.json").is_file():
        return old_vocab_size(home, None)
    return None


def update_scales(trainable_pure: dict, cfg: RunConfig, old_vocab: int | None):
    """A tree like `trainable_pure` of learning-rate multipliers: a per-token vector on the embedding leaves
    ([V, 1] for the embedding, [1, V] for the LM head kernel), a scalar where a group's multiplier is not 1, and
    None elsewhere."""
    g = cfg.optim.groups
    new_rows_only = "new_rows" in trainable_parts(cfg.train.trainable)
    old_rate = 0.0 if new_rows_only else g.old_rows

    def scale_for(path, leaf):
        p = path_str(path)
        if p in EMBEDDING_PATHS:
            vocab = leaf.shape[0] if p == EMBED else leaf.shape[1]
            cut = vocab if old_vocab is None else old_vocab
            if new_rows_only and cut >= vocab:
                raise UserError(f"train.old_vocab_size={old_vocab} leaves no new rows (vocab is {vocab})")
            rows = jnp.where(jnp.arange(vocab) < cut, old_rate, g.new_rows).astype(jnp.float32)
            return rows[:, None] if p == EMBED else rows[None, :]
        rate = g.lora if "lora_" in p else g.body
        return None if rate == 1.0 else jnp.asarray(rate, jnp.float32)

    return jax.tree_util.tree_map_with_path(scale_for, trainable_pure)


def seen_tokens(batch: dict, vocab: int) -> jax.Array:
    """[vocab] float32, 1 for every token id the batch holds as a real input or a scored target."""
    seen = jnp.zeros((vocab,), jnp.float32)
    for prefix in ("", "chosen_", "rejected_"):
        if prefix + "input_ids" in batch:
            real = (batch[prefix + "segment_ids"] > 0).astype(jnp.float32)
            seen = seen.at[batch[prefix + "input_ids"].ravel()].max(real.ravel())
            seen = seen.at[batch[prefix + "targets"].ravel()].max(batch[prefix + "loss_mask"].ravel())
    return seen


def with_seen_rows(scales, seen: jax.Array):
    """`scales` with the embedding leaves' rows of unseen tokens set to 0."""

    def apply(path, scale):
        p = path_str(path)
        if p == EMBED:
            return scale * seen[:, None]
        if p == HEAD:
            return scale * seen[None, :]
        return scale

    return jax.tree_util.tree_map_with_path(apply, scales, is_leaf=lambda x: x is None)
