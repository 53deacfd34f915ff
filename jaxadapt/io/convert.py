"""`jaxadapt convert`: any checkpoint we can read -> an HF directory (the one format every other command takes)."""

from __future__ import annotations

from pathlib import Path

from jaxadapt.config.model import check_dtype
from jaxadapt.io.gguf import convert_gguf
from jaxadapt.io.hf import has_tokenizer, read_config, resolve
from jaxadapt.io.rewrite import checkpoint_dtype, rewrite


def convert_any(src, out_dir, dtype: str | None = None) -> Path:
    """A `.gguf` file, an HF dir or a hub id -> an HF dir at out_dir (written atomically); returns its path.

    dtype: of the written tensors; by default an HF source keeps its own and a GGUF (quantized) becomes float32.
    An HF source is checked against its config.json as the loader checks it (every tensor present, expected, of
    the right shape) and streamed tensor by tensor, so any size converts in bounded memory; its tokenizer files
    are copied alongside.
    """
    if dtype is not None:
        check_dtype(dtype)
    if str(src).lower().endswith(".gguf"):
        return convert_gguf(src, out_dir, dtype=dtype or "float32")
    model_dir = resolve(src)
    return rewrite(model_dir, out_dir, read_config(model_dir), dtype or checkpoint_dtype(model_dir),
                   tokenizer=model_dir if has_tokenizer(model_dir) else None)
