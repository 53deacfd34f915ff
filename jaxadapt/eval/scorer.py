"""The one jitted forward pass of evaluation: summed log p(target) over the scored positions of each row.

Rows (input ids, targets, score mask, each at most seq_len long) are sorted by length and batched, each batch
right-padded to a power-of-two length (few compilations, little padding) and sharded over the mesh's batch axes
(data, fsdp). Every row is its own sequence: positions start at 0 and attention is causal within the row.
Multi-process: every process reads the same rows, builds the global batch from its own copy (each device takes
its slice) and gets the replicated sums back, so all processes agree on every number.
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

from jaxadapt.train.loss import token_logprobs

Row = tuple[np.ndarray, np.ndarray, np.ndarray]  # input ids, targets, score mask (bool)


class Scorer:
    """A model split once into graph and state, so every batch reuses one compiled function per padded length."""

    def __init__(self, model, mesh, batch_size: int):
        graphdef, self.state = nnx.split(model)
        shards = mesh.shape["data"] * mesh.shape["fsdp"]
        self.batch_size = -(-max(batch_size, 1) // shards) * shards  # the batch axis must divide over the shards
        self.sharding = NamedSharding(mesh, P(("data", "fsdp")))

        @partial(jax.jit, out_shardings=NamedSharding(mesh, P()))  # replicated: readable on every process
        def score(state, ids, targets, scored, valid):
            m = nnx.merge(graphdef, state)
            positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
            logits = m(ids, attention_mask=valid, positions=positions, segment_ids=valid.astype(jnp.int32))
            logp, _ = token_logprobs(logits, targets)
            return jnp.where(scored, logp, 0.0).sum(-1)  # where, not *: padded rows may hold NaN

        self._score = score

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
            sums = self._score(self.state, dev[0], dev[1], dev[2] > 0, dev[3] > 0)
            out[idx] = np.asarray(jax.device_get(sums), np.float64)[:len(idx)]
        return out
