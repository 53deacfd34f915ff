"""Command-line options that several commands share (declared once so their help reads the same everywhere).

Each is an `Annotated` type, so a command declares `overwrite: Overwrite = False` and keeps a plain Python default:
a recipe stage calls the same function with keyword arguments (recipes/kinds.py).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Write into an existing non-empty output dir: the files this command writes replace their "
                        "namesakes, nothing else there is touched.")]
MeshSpec = Annotated[Optional[str], typer.Option(
    help="Shard the model over this mesh, AXIS=SIZE for data, fsdp, tensor (e.g. fsdp=8), as training does "
         "(default: a run's own mesh where the devices allow it, else fsdp over all devices; an HF model replicated "
         "on every device).")]
ModelDtype = Annotated[Optional[str], typer.Option(
    help="Parameter and compute dtype: float32, bfloat16 or float16 (default: a run's configured dtypes; float32 "
         "for an HF model).")]
