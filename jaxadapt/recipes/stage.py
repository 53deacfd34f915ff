"""One recipe stage in a process of its own: `python -m jaxadapt.recipes.stage CALL_FILE ERROR_FILE`.

CALL_FILE holds the JSON of `PlannedStage.call`, {"kind": ..., "config": {...}}: the stage's config as the recipe
resolved it (a train stage's whole RunConfig tree). It is read again here against the kind's schema and handed to
the kind's entry point, the same function `jaxadapt COMMAND` calls, so a stage does exactly what its command does.
A bad input is a UserError: its message goes to ERROR_FILE, for the runner to raise as the stage's failure, and the
process exits 2 as the command line does; a train stopped by a signal exits 75 or 130 (errors.Stopped).

Why a process per stage rather than a call in the runner's own: its accelerator memory is freed when it ends;
JAX's platform (a non-collective stage of a multi-host recipe runs on the CPU alone, runner.execute) and
`jax.distributed` are set once per process, and a train stage starts its own; a stage's SIGTERM handler (save,
exit 75) and everything it prints, native libraries' output included, stay the stage's, in its log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jaxadapt.config.loader import load_config
from jaxadapt.errors import UserError
from jaxadapt.recipes.kinds import KINDS, check


def run(kind: str, config: dict[str, Any]) -> None:
    """Run one stage in this process."""
    source = f"the {kind} stage's config"
    if kind == "train":
        from jaxadapt.train.config import RunConfig
        from jaxadapt.train.loop import train

        print(f"run dir: {train(load_config(RunConfig, config, source=source))}", flush=True)
    else:
        KINDS[kind].entry(**check(kind, config, source))


def main(argv: list[str] | None = None) -> int:
    call_file, error_file = argv if argv is not None else sys.argv[1:]
    spec = json.loads(Path(call_file).read_text(encoding="utf-8"))
    try:
        run(spec["kind"], spec["config"])
    except UserError as e:
        Path(error_file).write_text(str(e), encoding="utf-8")
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr, flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
