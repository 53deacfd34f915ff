"""`jaxadapt convert`: any checkpoint we can read -> an HF directory (the one format every other command takes)."""

from __future__ import annotations

from pathlib import Path

from jaxadapt.config.model import DTYPES
from jaxadapt.io.gguf import convert_gguf
from jaxadapt.io.hf import has_tokenizer, load_pretrained, resolve, save_pretrained
from jaxadapt.io.safetensors import CheckpointError


def convert_any(src, out_dir, dtype: str = "float32") -> Path:
    """A `.gguf` file, an HF dir or a hub id -> an HF dir at out_dir (written atomically); returns its path.

    An HF source goes through jaxadapt's own loader and writer, so a successful convert proves the checkpoint
    loads; its tokenizer files are copied alongside.
    """
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype={dtype!r} is not supported; expected one of {DTYPES}")
    if str(src).lower().endswith(".gguf"):
        return convert_gguf(src, out_dir, dtype=dtype)
    model_dir = resolve(src)
    model = load_pretrained(model_dir, dtype=dtype)
    return save_pretrained(model, out_dir, tokenizer=model_dir if has_tokenizer(model_dir) else None, dtype=dtype)
