"""The one jitted forward pass of evaluation: summed log p(target) over the scored positions of each row.

Rows (input ids, targets, score mask, each at most seq_len long) are sorted by length and batched, each batch
right-padded to a power-of-two length (few compilations, little padding) and sharded over the mesh's batch axes
(data, fsdp). Every row is its own sequence: positions start at 0 and attention is causal within the row.
Multi-process: every process reads the same rows, builds the global batch from its own copy (each device takes
its slice) and gets the replicated sums back, so all processes agree on every number.

The LM head and the softmax run `logits_chunk` positions at a time (jaxadapt.train.loss.target_logprobs): at
Llama-3's 128K vocabulary, 8 rows x 4096 positions of float32 logits are 16 GiB, more than the model. By default
the chunk keeps one device's logits under 1 GiB (train.chunking.auto_logits_chunk; whole rows when they fit). Widths
are powers of two, so a power-of-two chunk divides every width it is smaller than.
"""

from __future__ import annotations

import math
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from jaxadapt.errors import UserError
from jaxadapt.train.chunking import auto_logits_chunk
from jaxadapt.train.loss import target_logprobs

Row = tuple[np.ndarray, np.ndarray, np.ndarray]  # input ids, targets, score mask (bool)


def check_logits_chunk(chunk: int | None, name: str = "logits_chunk") -> None:
    if chunk is not None and (chunk < 0 or chunk & (chunk - 1)):
        raise UserError(f"{name} {chunk}: expected 0 (all positions at once) or a power of two")


class Scorer:
    """A model split once into graph and state, so every batch reuses one compiled function per padded length."""

    def __init__(self, model, mesh, batch_size: int, logits_chunk: int | None = None):
        """logits_chunk: positions per LM-head pass, 0 = all at once, None = auto_logits_chunk per batch width."""
        check_logits_chunk(logits_chunk)
        graphdef, self.state = nnx.split(model)
        shards = mesh.shape["data"] * mesh.shape["fsdp"]
        self.batch_size = -(-max(batch_size, 1) // shards) * shards  # the batch axis must divide over the shards
        self.sharding = NamedSharding(mesh, P(("data", "fsdp")))
        self.logits_chunk, self.vocab, self.shards = logits_chunk, model.config.vocab_size, shards

        # out_shardings replicated: the sums are readable on every process
        @partial(jax.jit, static_argnames="chunk", out_shardings=NamedSharding(mesh, P()))
        def score(state, ids, targets, scored, valid, chunk):
            segments = valid.astype(jnp.int32)
            batch = {"input_ids": ids, "targets": targets, "segment_ids": segments,
                     "positions": jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)}
            logp, _ = target_logprobs(nnx.merge(graphdef, state), batch, chunk=chunk)
            return jnp.where(scored, logp, 0.0).sum(-1)  # where, not *: padded rows may hold NaN

        self._score = score

    def chunk_for(self, width: int) -> int:
        if self.logits_chunk is not None:
            return self.logits_chunk
        return auto_logits_chunk(self.batch_size // self.shards, width, self.vocab)

    def logprobs(self, rows: list[Row], desc: str) -> np.ndarray:
        """Summed log-probability of the scored targets of each row (float64, in the order given)."""
        out = np.zeros(len(rows))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        B = self.batch_size
        for lo in tqdm(range(0, len(order), B), desc=desc, unit="batch", file=sys.stderr, disable=None, leave=False):
            idx = order[lo:lo + B]
            width = 2 ** math.ceil(math.log2(max(8, len(rows[idx[0]][0]))))
            arrays = np.zeros((4, B, width), np.int32)
            for j, i in enumerate(idx):
                ids, targets, scored = rows[i]
                n = len(ids)
                arrays[0, j, :n], arrays[1, j, :n], arrays[2, j, :n], arrays[3, j, :n] = ids, targets, scored, 1
            dev = [jax.make_array_from_callback(a.shape, self.sharding, lambda index, a=a: a[index]) for a in arrays]
            sums = self._score(self.state, dev[0], dev[1], dev[2] > 0, dev[3] > 0, chunk=self.chunk_for(width))
            out[idx] = np.asarray(jax.device_get(sums), np.float64)[:len(idx)]
        return out
