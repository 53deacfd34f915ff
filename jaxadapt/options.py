"""Command-line options that several sub-apps share (declared once so their help reads the same everywhere)."""

from __future__ import annotations

import typer

OVERWRITE = typer.Option(False, "--overwrite",
                         help="Write into an existing non-empty output dir: the files this command writes replace "
                              "their namesakes, nothing else there is touched.")
MESH = typer.Option(None, help="Shard the model over this mesh, AXIS=SIZE for data, fsdp, tensor (e.g. fsdp=8), as "
                               "training does (default: a run's own mesh where the devices allow it, else fsdp over "
                               "all devices; an HF model replicated on every device).")
MODEL_DTYPE = typer.Option(None, help="Parameter and compute dtype: float32, bfloat16 or float16 (default: a run's "
                                      "configured dtypes; float32 for an HF model).")
