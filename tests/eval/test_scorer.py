"""How the scorer sizes its chunks per padded width (the results of chunked scoring are checked against
transformers in test_eval_bpb)."""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P

from jaxadapt.config import ModelConfig
from jaxadapt.eval.scorer import Scorer
from jaxadapt.model import init_model
from jaxadapt.sharding import make_mesh


def scorer(heads: int, mesh, batch_size: int = 8, **chunks) -> Scorer:
    cfg = ModelConfig(vocab_size=65536, hidden_size=2 * heads, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=heads, num_key_value_heads=heads)
    return Scorer(init_model(cfg), mesh, batch_size=batch_size, **chunks)


def test_attention_is_chunked_where_one_layer_scores_exceed_1_gib():
    """8 rows x 32 heads: 256 MiB of float32 scores at width 512, 16 GiB at 4096 -> 256 queries (4 MiB each).
    The logits (65536 vocab): 1 GiB at 512, whole; 8 GiB at 4096 -> 512 positions (2 MiB each)."""
    s = scorer(32, make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    assert s.chunks_for(512) == (0, 0)
    assert s.chunks_for(4096) == (512, 256)


def test_chunks_count_rows_and_heads_per_device():
    """data=2 halves the rows, tensor=2 the heads: 4 rows x 16 heads at 4096 -> 1024 queries, and 1024 positions
    of logits."""
    s = scorer(32, make_mesh(2, 1, 2, devices=jax.devices()[:4]))
    assert s.rows == 4 and s.heads == 16
    assert s.chunks_for(4096) == (1024, 1024)


def test_explicit_chunks_are_kept():
    s = scorer(4, make_mesh(1, 1, 1, devices=jax.devices()[:1]), logits_chunk=16, attention_chunk=0)
    assert s.chunks_for(4096) == (16, 0)


def test_the_batch_splits_over_the_data_parallel_axes_as_in_training():
    """The mesh table's batch axes (data and fsdp, not tensor): 6 rows round up to 8 on data=2, fsdp=2, tensor=2."""
    s = scorer(4, make_mesh(2, 2, 2), batch_size=6)
    assert s.sharding.spec == P(("data", "fsdp"))
    assert (s.batch_size, s.rows) == (8, 2)
