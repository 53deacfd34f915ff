"""Training objectives. Each returns (sum of per-token losses, number of counted tokens, aux metrics), so that
gradient accumulation and data parallelism can add sums and divide once: the loss of 4 micro-batches of b
equals the loss of one batch of 4b, token-weighted, whatever the padding.

Batches follow the jaxadapt.data contract: input_ids, targets, loss_mask, segment_ids (0 = padding),
positions, all [batch, seq]. DPO batches carry the same fields twice, prefixed `chosen_` and `rejected_`;
the two are concatenated inside the jitted step, so pair i stays aligned however the batch is sharded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxadapt.model import project, remat_chunks


def token_logprobs(logits, targets):
    """log p(target) and logsumexp per position, in float32.

    The target's logit is picked by a masked sum over the vocabulary, not a gather: with a vocabulary-parallel LM
    head (FSDP) each device sums its own slice, where a gather would first collect the whole logits."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    picked = jnp.where(vocab == targets[..., None], logits, 0.0).sum(-1)
    return picked - lse, lse


def target_logprobs(model, batch, rng=None, chunk: int = 0):
    """token_logprobs of the batch's targets under the model, [batch, seq] each.

    With chunk > 0 (a divisor of seq) the LM head and the softmax run `chunk` positions at a time and are
    recomputed in the backward pass, so no pass holds more than [batch, chunk, vocab] float32 logits instead of
    [batch, seq, vocab]: at Llama-3's 128K vocabulary, 8 x 4096 positions of logits are 16 GiB."""
    h = model.hidden_states(batch["input_ids"], attention_mask=batch["segment_ids"] > 0,
                            positions=batch["positions"], segment_ids=batch["segment_ids"], rng=rng)
    head, cap = model.head(), model.config.final_logit_softcapping
    return remat_chunks(lambda hc, tc: token_logprobs(project(hc, head, cap), tc), chunk, h, batch["targets"])


def scored_logprobs(model, batch, scored, chunk: int = 0):
    """Summed log p(target) over the `scored` (bool) positions of each row, [batch]: the one forward pass of
    evaluation, both the validation loss of a training run and `jaxadapt eval`'s bits per byte and choices.
    `where`, not a product with the mask: a padded row may hold NaN, and NaN * 0 is NaN."""
    logp, _ = target_logprobs(model, batch, chunk=chunk)
    return jnp.where(scored, logp, 0.0).sum(-1)


def clm_loss(model, batch, rng=None, z_loss: float = 0.0, chunk: int = 0, **_):
    """Next-token cross-entropy over loss_mask (padding, document ends and, for SFT, prompts excluded)."""
    logp, lse = target_logprobs(model, batch, rng, chunk)
    mask = batch["loss_mask"].astype(jnp.float32)
    total = -(logp * mask).sum()
    aux = {}
    if z_loss:
        zl = (z_loss * jnp.square(lse) * mask).sum()
        total = total + zl
        aux["z_loss_sum"] = zl
    return total, mask.sum(), aux


FIELDS = ("input_ids", "targets", "loss_mask", "segment_ids", "positions")


def paired(batch):
    """chosen_* and rejected_* fields -> one batch, chosen rows first."""
    return {k: jnp.concatenate([batch["chosen_" + k], batch["rejected_" + k]]) for k in FIELDS}


def dpo_loss(model, batch, rng=None, ref_logps=None, beta: float = 0.1, chunk: int = 0, **_):
    """DPO: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), per pair; ref_logps [2B] from the frozen
    reference model (`sequence_logprobs` of the same paired batch). The returned 'token count' is the number of
    pairs, so the mean is per pair."""
    batch = paired(batch)
    logp, _ = target_logprobs(model, batch, rng, chunk)
    seq_logp = (logp * batch["loss_mask"]).sum(-1)
    half = seq_logp.shape[0] // 2
    margin = (seq_logp[:half] - ref_logps[:half]) - (seq_logp[half:] - ref_logps[half:])
    losses = -jax.nn.log_sigmoid(beta * margin)
    return losses.sum(), jnp.asarray(half, jnp.float32), {"reward_acc_sum": (margin > 0).sum().astype(jnp.float32)}


def sequence_logprobs(model, batch, chunk: int = 0):
    """Summed target log-probabilities per sequence of a paired DPO batch (the reference pass)."""
    batch = paired(batch)
    logp, _ = target_logprobs(model, batch, chunk=chunk)
    return (logp * batch["loss_mask"]).sum(-1)


OBJECTIVES = {"clm": clm_loss, "sft": clm_loss, "dpo": dpo_loss}
