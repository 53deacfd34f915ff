"""The one jitted forward pass of evaluation: summed log p(target) over the scored positions of each row.

Rows (input ids, targets, score mask, each at most seq_len long) are sorted by length and batched, each batch
right-padded to a power-of-two length (few compilations, little padding) and sharded over the mesh's batch axes
(data, fsdp). Every row is its own sequence: positions start at 0 and attention is causal within the row.
Multi-process: every process reads the same rows, builds the global batch from its own copy (each device takes
its slice) and gets the replicated sums back, so all processes agree on every number.

Two things grow with the width and are computed in chunks of positions:
- the LM head and the softmax run `logits_chunk` positions at a time (jaxadapt.train.loss.target_logprobs): at
  Llama-3's 128K vocabulary, 8 rows x 4096 positions of float32 logits are 16 GiB, more than the model;
- each layer's attention takes `attention_chunk` queries at a time (jaxadapt.model.attention_chunking):
  Llama-3-8B's 32 heads over 8 rows x 4096 positions hold 16 GiB of float32 scores.
By default each chunk keeps one device's share under 1 GiB (jaxadapt.train.chunking; whole rows when they fit:
a forward pass holds one layer's scores at a time). Widths are powers of two, so a power-of-two chunk divides every
width it is smaller than.
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
from jaxadapt.model import attention_chunking
from jaxadapt.sharding import LOGICAL_TO_MESH, logical_size, per_device
from jaxadapt.train.chunking import auto_attention_chunk, auto_logits_chunk
from jaxadapt.train.loss import scored_logprobs

Row = tuple[np.ndarray, np.ndarray, np.ndarray]  # input ids, targets, score mask (bool)


def check_chunk(chunk: int | None, name: str) -> None:
    if chunk is not None and (chunk < 0 or chunk & (chunk - 1)):
        raise UserError(f"{name} {chunk}: expected 0 (all positions at once) or a power of two")


class Scorer:
    """A model split once into graph and state, so every batch reuses one compiled function per padded length."""

    def __init__(self, model, mesh, batch_size: int, logits_chunk: int | None = None,
                 attention_chunk: int | None = None):
        """logits_chunk: positions per LM-head pass, attention_chunk: queries per attention pass; for each, 0 = all
        at once, None = by the 1 GiB rule per batch width."""
        check_chunk(logits_chunk, "logits_chunk")
        check_chunk(attention_chunk, "attention_chunk")
        graphdef, self.state = nnx.split(model)
        shards = logical_size(mesh, "batch")
        self.batch_size = -(-max(batch_size, 1) // shards) * shards  # the batch axis must divide over the shards
        self.sharding = NamedSharding(mesh, P(LOGICAL_TO_MESH["batch"]))
        self.chunks, self.vocab = (logits_chunk, attention_chunk), model.config.vocab_size
        self.rows = self.batch_size // shards
        self.heads = per_device(model.config.num_attention_heads, mesh, "heads")

        # out_shardings replicated: the sums are readable on every process
        @partial(jax.jit, static_argnames="chunks", out_shardings=NamedSharding(mesh, P()))
        def score(state, ids, targets, scored, valid, chunks):
            segments = valid.astype(jnp.int32)
            batch = {"input_ids": ids, "targets": targets, "segment_ids": segments,
                     "positions": jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)}
            with attention_chunking(chunks[1]):
                return scored_logprobs(nnx.merge(graphdef, state), batch, scored, chunk=chunks[0])

        self._score = score

    def chunks_for(self, width: int) -> tuple[int, int]:
        """(logits chunk, attention chunk) for batches padded to `width`."""
        logits, attention = self.chunks
        return (auto_logits_chunk(self.rows, width, self.vocab) if logits is None else logits,
                auto_attention_chunk(self.rows, self.heads, width, layers=1, remat="none") if attention is None
                else attention)

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
            sums = self._score(self.state, dev[0], dev[1], dev[2] > 0, dev[3] > 0, chunks=self.chunks_for(width))
            out[idx] = np.asarray(jax.device_get(sums), np.float64)[:len(idx)]
        return out
