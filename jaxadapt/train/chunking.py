"""How many positions the LM head and the training attention take at a time when the run says "auto".

Both chunkings recompute their piece in the backward pass, so they cost speed and are used only where the whole
thing would be large: where one device would hold more than CHUNK_BUDGET bytes of float32 logits or attention
weights. Both pick the largest divisor of the sequence length that fits, so as few chunks as possible.
"""

from __future__ import annotations

CHUNK_BUDGET = 1 << 30  # bytes of float32 logits (or attention weights) one device holds at once under "auto"
# Remat policies under which the backward pass keeps every layer's attention scores ([rows, heads, seq, seq])
# rather than recomputing one layer's at a time (jaxadapt.model.REMAT_POLICIES).
KEEPS_ATTENTION = ("none", "dots")


def fitting_chunk(length: int, bytes_per_position: int, budget: int = CHUNK_BUDGET) -> int:
    """The largest divisor of `length` below it whose positions fit `budget` (at least 1)."""
    return max([d for d in range(1, length) if length % d == 0 and d * bytes_per_position <= budget], default=1)


def auto_logits_chunk(rows: int, length: int, vocab: int, budget: int = CHUNK_BUDGET) -> int:
    """Positions per LM-head pass for `rows` rows (per device) of `length` positions, by the [rows, length, vocab]
    float32 logits. Llama-3 (128K vocabulary) at 8 rows x 4096 would hold 16 GiB of them, SmolLM2 at 4 x 256
    0.2 GiB. Chunking costs one more head forward in the backward (~1/3 of the head's FLOPs)."""
    return 0 if rows * length * vocab * 4 <= budget else fitting_chunk(length, rows * vocab * 4, budget)


def auto_attention_chunk(rows: int, heads: int, length: int, layers: int, remat: str,
                         budget: int = CHUNK_BUDGET) -> int:
    """Queries per pass of the training attention (jaxadapt.model.chunked_attention) for `rows` rows and `heads`
    query heads per device. Unchunked, the backward keeps float32 [rows, heads, length, length] scores for every
    layer under remat none / dots, for one layer at a time under full / dots_no_batch; chunked, only one chunk's
    [rows, heads, chunk, length] exist at a time. Llama-3-8B at 1 row x 4096 per device: 2 GiB per layer, so
    2048-query chunks under remat full; SmolLM2 at 4 x 256: 0.3 GiB for all 30 layers, no chunking."""
    per_query = rows * heads * length * 4
    held = per_query * length * (layers if remat in KEEPS_ATTENTION else 1)
    return 0 if held <= budget else fitting_chunk(length, per_query, budget)
