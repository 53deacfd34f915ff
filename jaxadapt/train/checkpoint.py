"""Checkpoints with orbax: trainable params, optimizer state, step and RNG (one sharded pytree), the data
iterator state and the resolved config (JSON), under run_dir/checkpoints/<step>/.

Orbax writes each step into a temporary directory and renames it when complete (on an object store, which cannot
rename, it writes a commit marker last), so a process killed mid-write leaves no step that `latest_step` would pick
up; `directory` may be a `gs://` URL. A step that was complete but no longer restores (a disk
error, a truncated or deleted file) is set aside as `corrupt-STEP-TIME` and the previous step is tried. Saves are
asynchronous: the train loop continues while the previous step is written. Restoring uses the abstract state with
its shardings, so every device reads only its own shards.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jaxadapt.errors import UserError
from jaxadapt import fs


class Checkpointer:
    def __init__(self, directory: Path, keep: int = 3, async_save: bool = True, writer: bool = True):
        """writer=False (export, eval): no directory is created and no leftover temporary step is cleaned up, so
        reading a run changes nothing in it and leaves no background thread behind."""
        self.directory = fs.path(directory) if fs.is_url(str(directory)) else Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.LatestN(keep),
            enable_async_checkpointing=async_save,
            create=writer,
            cleanup_tmp_directories=writer,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)),
            force=True)

    def restore(self, step: int, abstract_state: Any, shardings: Any) -> tuple[Any, dict, dict]:
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
                              shardings)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        return out["state"], out["data"], out["meta"]

    def restore_params(self, step: int, params: Any, shardings: Any) -> Any:
        """Only state["params"] of a step, shaped and typed like `params` (a tree of arrays or abstract ones),
        placed by `shardings`: what export, eval and generate need, without reading the optimizer state."""
        target = {"params": jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params,
                                         shardings)}
        args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
                            target)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(target, restore_args=args, partial_restore=True)))
        return out["state"]["params"]

    def restore_latest(self, abstract_state: Any, shardings: Any) -> tuple[int, Any, dict, dict] | None:
        """(step, state, data state, meta) of the newest step that restores, None if there is no checkpoint."""
        steps = sorted(self.all_steps(), reverse=True)
        for step in steps:
            try:
                return step, *self.restore(step, abstract_state, shardings)
            except Exception as e:  # orbax, tensorstore and JSON errors alike: the step cannot be used
                why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                aside = self.set_aside(step)
                _warn(f"checkpoint step {step} does not restore ({type(e).__name__}: {why}); moved to {aside}, "
                      "trying the previous step")
        if steps:
            raise UserError(f"{self.directory}: no checkpoint restores (steps {steps} were set aside as corrupt-*); "
                            "start the run under another name, or move them back to retry")
        return None

    def set_aside(self, step: int):
        """Rename a step dir to a name orbax does not read as a step; nothing is deleted."""
        aside = self.directory / f"corrupt-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            fs.move(self.directory / str(step), aside)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxadapt set aside {step}")
        self.manager.reload()
        return aside

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _warn(msg: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {msg}", file=sys.stderr, flush=True)
