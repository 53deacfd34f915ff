"""Which parameters train: a filter over the model's parameter paths, plus row masks for `new_rows`.

Frozen parameters stay out of the optimizer entirely (no Adam moments), which is what makes LoRA and
embeddings-only training cheap in memory. `new_rows` trains the embedding and LM-head rows of the tokens added
by vocabulary adaptation (ids >= old_vocab_size) and leaves the old rows bit-identical: their gradient and
their final update (weight decay included) are multiplied by zero.
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
from jaxadapt.train.config import trainable_parts

EMBEDDING_PATHS = ("model/embed_tokens/embedding", "lm_head/kernel")


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


def row_masks(trainable_pure: dict, spec: str, old_vocab: int | None):
    """A tree like `trainable_pure` with a 0/1 mask on the embedding leaves (rows >= old_vocab) and None
    elsewhere, or None when nothing is masked."""
    if "new_rows" not in trainable_parts(spec):
        return None

    def mask_for(path, leaf):
        p = path_str(path)
        if p == "model/embed_tokens/embedding":
            if old_vocab >= leaf.shape[0]:
                raise UserError(f"train.old_vocab_size={old_vocab} leaves no new rows (vocab is {leaf.shape[0]})")
            return (jnp.arange(leaf.shape[0]) >= old_vocab)[:, None].astype(leaf.dtype)
        if p == "lm_head/kernel":
            return (jnp.arange(leaf.shape[1]) >= old_vocab)[None, :].astype(leaf.dtype)
        return None

    return jax.tree_util.tree_map_with_path(mask_for, trainable_pure)
