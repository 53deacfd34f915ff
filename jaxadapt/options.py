"""Command-line options that several sub-apps share (declared once so their help reads the same everywhere)."""

from __future__ import annotations

import typer

OVERWRITE = typer.Option(False, "--overwrite",
                         help="Write into an existing non-empty output dir: the files this command writes replace "
                              "their namesakes, nothing else there is touched.")
