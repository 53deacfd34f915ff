"""The optimizer: global-norm clipping, then AdamW with a warmup + decay schedule.

Weight decay is masked off norms and biases (decaying a norm gain toward 0 only hurts). For `new_rows` the
row masks wrap the chain on both sides: masking the gradient keeps the grad norm and Adam moments honest, and
masking the final update removes the weight decay that AdamW would otherwise still apply to frozen rows.
"""

from __future__ import annotations

import jax
import optax

from jaxadapt.sharding import path_str
from jaxadapt.train.config import OptimConfig


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    peak, floor = cfg.learning_rate, cfg.learning_rate * cfg.min_lr_ratio
    warm = max(0, min(cfg.warmup_steps, total_steps))
    decay_steps = max(1, total_steps - warm)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(peak, floor, decay_steps)
    else:
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.min_lr_ratio)
    if warm == 0:
        return after
    # Warmup starts above 0 so that step 0 already moves the weights (as HF's schedulers do from step 1).
    return optax.join_schedules([optax.linear_schedule(peak / warm, peak, warm - 1) if warm > 1 else
                                 optax.constant_schedule(peak), after], [warm])


def _decay_mask(params):
    def decays(path, _):
        p = path_str(path)
        return not (p.endswith("/bias") or "norm" in p.rsplit("/", 2)[-2])

    return jax.tree_util.tree_map_with_path(decays, params)


def mask_updates(masks) -> optax.GradientTransformation:
    """Multiply updates by per-leaf masks (None = leave the leaf alone)."""

    def update(updates, state, params=None):
        del params
        out = jax.tree.map(lambda u, m: u if m is None else u * m, updates, masks, is_leaf=lambda x: x is None)
        return out, state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(cfg: OptimConfig, total_steps: int, masks=None) -> optax.GradientTransformation:
    chain = []
    if masks is not None:
        chain.append(mask_updates(masks))
    if cfg.clip_norm:
        chain.append(optax.clip_by_global_norm(cfg.clip_norm))
    chain.append(optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=_decay_mask))
    if masks is not None:
        chain.append(mask_updates(masks))
    return optax.chain(*chain)
