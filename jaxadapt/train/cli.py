"""`jaxadapt export` as a typed function: the CLI mounts it, a recipe's `export` stage calls it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from jaxadapt.errors import UserError
from jaxadapt.io.atomic import check_output
from jaxadapt.options import Overwrite


def export(
    run_dir: Annotated[str, typer.Argument(help="A run dir written by `jaxadapt train` (a path or a gs:// URL).")],
    out_dir: Annotated[str, typer.Argument(help="The HF (or PEFT adapter) directory to write (a path or a gs:// "
                                                "URL).")],
    step: Annotated[Optional[int], typer.Option(help="Checkpoint step (default: the latest).")] = None,
    merge_lora: Annotated[bool, typer.Option("--merge-lora", help="Fold LoRA into the weights (the "
                                                                  "default).")] = False,
    peft_adapter: Annotated[bool, typer.Option("--peft-adapter", help="Write a PEFT adapter instead.")] = False,
    dtype: Annotated[Optional[str], typer.Option(help="Dtype of the merged model's tensors: float32, bfloat16 or "
                                                      "float16 (default: the run's parameter dtype).")] = None,
    overwrite: Overwrite = False,
):
    """Write a run's checkpoint as an HF directory that transformers / peft / lm-eval load. Only the parameters are
    restored (sharded as in training, on whatever devices there are) and written one tensor at a time."""
    from jaxadapt.config.model import check_dtype
    from jaxadapt.train.export import export as run_export

    if merge_lora and peft_adapter:
        raise UserError("--merge-lora and --peft-adapter exclude each other")
    if dtype is not None and peft_adapter:
        raise UserError(f"--dtype {dtype}: applies to a merged export, not to --peft-adapter (adapters keep the "
                        "run's dtype)")
    if dtype is not None:
        check_dtype(dtype)
    check_output(out_dir, [run_dir], overwrite)
    typer.echo(f"wrote {run_export(run_dir, out_dir, step, 'peft' if peft_adapter else 'merge', dtype=dtype)}")
