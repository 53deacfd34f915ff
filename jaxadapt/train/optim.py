"""The optimizer: global-norm clipping, then AdamW with a warmup + decay schedule.

Weight decay is masked off norms and biases (decaying a norm gain toward 0 only hurts) and, unless
`optim.embedding_weight_decay`, off the embedding and LM-head rows (decay would pull every unseen token's row
toward 0). Per-group learning rates and row freezing are applied around this chain by the train step
(`jaxadapt.train.partition.update_scales`).
"""

from __future__ import annotations

import jax
import optax

from jaxadapt.sharding import path_str
from jaxadapt.train.config import OptimConfig
from jaxadapt.train.partition import group


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


def _decay_mask(decay_embeddings: bool):
    def mask(params):
        def decays(path, _):
            p = path_str(path)
            if group(p) == "rows":
                return decay_embeddings
            return not (p.endswith("/bias") or "norm" in p.rsplit("/", 2)[-2])

        return jax.tree_util.tree_map_with_path(decays, params)

    return mask


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    chain = []
    if cfg.clip_norm:
        chain.append(optax.clip_by_global_norm(cfg.clip_norm))
    chain.append(optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=_decay_mask(cfg.embedding_weight_decay)))
    return optax.chain(*chain)
