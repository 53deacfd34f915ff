"""Which parameters train, and how fast: a filter over the model's parameter paths, plus per-group update scales.

A parameter's group (`group`: embedding / LM-head rows, LoRA factors, the rest of the body) is read from its path
alone, by the trainable filter, the update scales and the optimizer's decay mask alike: the optimizer and the step
see pure dicts, in which the paths are all that is left of the nnx variables.

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
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from jaxadapt.errors import UserError
from jaxadapt.params import PARAMS
from jaxadapt.sharding import path_str
from jaxadapt.train.config import RunConfig, Trainable

# The per-token parameters (embedding, untied LM head) and the axis of their vocabulary, from the parameter table.
ROW_AXIS = {s.path: s.axes.index("vocab") for s in PARAMS if "vocab" in s.axes}
LORA_FACTORS = ("lora_a", "lora_b")  # the trained leaves of an adapted Linear (its lora_scale is not a Param)


def group(path: str) -> Literal["rows", "lora", "body"]:
    """The group of the parameter at the '/'-joined `path`: per-token rows, a LoRA factor, or the rest."""
    if path in ROW_AXIS:
        return "rows"
    return "lora" if path.rsplit("/", 1)[-1] in LORA_FACTORS else "body"


def trains(path: str, trainable: Trainable) -> bool:
    """Whether `trainable` trains the parameter at `path` (all of it, or some of its rows)."""
    g = group(path)
    return trainable.lora if g == "lora" else trainable.rows != "none" if g == "rows" else trainable.body


def along_rows(vector: jax.Array, path: str, ndim: int) -> jax.Array:
    """A per-token `vector` shaped to broadcast against the parameter at `path` ([V, 1] for the embedding, [1, V]
    for the LM head kernel)."""
    return vector.reshape([-1 if i == ROW_AXIS[path] else 1 for i in range(ndim)])


def split_trainable(model, trainable: Trainable):
    """(graphdef, trainable nnx.State, frozen nnx.State)."""
    graphdef, params, frozen = nnx.split(
        model, lambda path, var: isinstance(var, nnx.Param) and trains(path_str(path), trainable), ...)
    if not jax.tree.leaves(params):
        raise UserError(f"train.trainable={str(trainable)!r} selects no parameter of this model"
                        + (" (no LoRA factors attached)" if trainable.lora else ""))
    return graphdef, params, frozen


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

    rows = cfg.train.trainable.rows
    g = cfg.optim.groups
    if rows == "none" or (rows == "all" and g.old_rows == g.new_rows):
        return None
    if cfg.train.old_vocab_size is not None:
        return cfg.train.old_vocab_size
    home = checkpoint_dir(cfg.model.path) or Path(cfg.model.path)  # a hub id's snapshot; a preset has no record
    if rows == "new" or (home / "adaptation.json").is_file():
        return old_vocab_size(home, None)
    return None


def update_scales(trainable_pure: dict, cfg: RunConfig, old_vocab: int | None):
    """A tree like `trainable_pure` of learning-rate multipliers: a per-token vector on the embedding leaves
    ([V, 1] for the embedding, [1, V] for the LM head kernel), a scalar where a group's multiplier is not 1, and
    None elsewhere."""
    g = cfg.optim.groups
    new_rows_only = cfg.train.trainable.rows == "new"
    old_rate = 0.0 if new_rows_only else g.old_rows

    def scale_for(path, leaf):
        p = path_str(path)
        kind = group(p)
        if kind == "rows":
            vocab = leaf.shape[ROW_AXIS[p]]
            cut = vocab if old_vocab is None else old_vocab
            if new_rows_only and cut >= vocab:
                raise UserError(f"train.old_vocab_size={old_vocab} leaves no new rows (vocab is {vocab})")
            rows = jnp.where(jnp.arange(vocab) < cut, old_rate, g.new_rows).astype(jnp.float32)
            return along_rows(rows, p, leaf.ndim)
        rate = g.lora if kind == "lora" else g.body
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
        return scale * along_rows(seen, p, scale.ndim) if group(p) == "rows" else scale

    return jax.tree_util.tree_map_with_path(apply, scales, is_leaf=lambda x: x is None)
