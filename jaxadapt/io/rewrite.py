"""HF dir -> HF dir, one tensor at a time: the path of `convert`, `vocab adapt` and `propagate`.

Those commands change a few matrices (the vocabulary's) or none, so they never need the model: each tensor is read
from the source file, edited or replaced if asked, cast and written before the next is read. Host memory stays at
one tensor plus the replaced matrices, whatever the model's size; a model that would not fit a device, or the host
in float32, goes through as it is. A cast between float types goes through float32, so the bytes equal those of
loading the model in float32 and saving it in the target dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from jaxadapt.config import ModelConfig
from jaxadapt.config.model import DTYPES, check_dtype
from jaxadapt.io.hf import hf_specs, open_tensors, read_config, read_hf_config, write_hf_dir


def checkpoint_dtype(model_dir: Path) -> str:
    """The dtype an HF dir states (config.json `dtype`, or the older `torch_dtype`); float32 when it states none
    jaxadapt writes."""
    hf_cfg = read_hf_config(model_dir)
    dtype = hf_cfg.get("dtype") or hf_cfg.get("torch_dtype")
    return dtype if dtype in DTYPES else "float32"


def read_matrix(model_dir: Path, name: str) -> np.ndarray:
    """One tensor of an HF dir as float32 (a vocabulary matrix the caller edits), checked against its config."""
    tensors = open_tensors(model_dir, read_config(model_dir))
    return tensors[name].read(name).astype(np.float32)


def read_vocab_matrices(model_dir: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(input embeddings, LM head rows or None when tied) of an HF dir as float32, its checkpoint opened once."""
    cfg = read_config(model_dir)
    tensors = open_tensors(model_dir, cfg)

    def read(name: str) -> np.ndarray:
        return tensors[name].read(name).astype(np.float32)

    return read("model.embed_tokens.weight"), None if cfg.tie_word_embeddings else read("lm_head.weight")


def rewrite(src: Path, out, cfg: ModelConfig, dtype: str, *,
            replace: dict[str, Callable[[], np.ndarray]] | None = None,
            edit: Callable[[str, np.ndarray], np.ndarray] | None = None, tokenizer: Any = None,
            extra_files: dict[str, str] | None = None) -> Path:
    """Write `out`, the HF dir of `cfg` (vocabulary and special ids may differ from src's): tensors named in
    `replace` come from their function, the others from src, passed through `edit(name, float32 array)` if given.
    Written atomically (write_hf_dir)."""
    check_dtype(dtype)
    replace = replace or {}
    tensors = open_tensors(src, read_config(src))
    np_dtype = np.dtype(jnp.dtype(dtype))

    def produce(name: str) -> np.ndarray:
        if name in replace:
            arr = replace[name]()
        else:
            arr = tensors[name].read(name)
            if edit is not None:
                arr = edit(name, arr.astype(np.float32))
        if arr.dtype == np_dtype:
            return arr
        return (arr if arr.dtype == np.float32 else arr.astype(np.float32)).astype(np_dtype)

    return write_hf_dir(out, cfg, hf_specs(cfg, np_dtype), produce, dtype=dtype, tokenizer=tokenizer,
                        extra_files=extra_files)

