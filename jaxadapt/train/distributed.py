"""Multi-process start-up: call `jax.distributed.initialize()` when the environment says this is one process
of many (a TPU pod slice, a SLURM job with several tasks, or explicit coordinator variables), never otherwise.

Explicit form (any launcher): JAXADAPT_COORDINATOR=host:port JAXADAPT_NUM_PROCESSES=N JAXADAPT_PROCESS_ID=i.
JAXADAPT_DISTRIBUTED=1 asks for JAX's own cluster detection (GCE TPU metadata, SLURM, ...) when no variable
above is visible, as in a command started over ssh on each worker of a TPU pod (scripts/tpu/launch.sh sets it).
"""

from __future__ import annotations

import os

import jax

_done = False


def maybe_initialize() -> bool:
    global _done
    if _done:
        return True
    env = os.environ
    if env.get("JAXADAPT_COORDINATOR"):
        jax.distributed.initialize(coordinator_address=env["JAXADAPT_COORDINATOR"],
                                   num_processes=int(env["JAXADAPT_NUM_PROCESSES"]),
                                   process_id=int(env["JAXADAPT_PROCESS_ID"]))
    elif (env.get("JAXADAPT_DISTRIBUTED") == "1" or int(env.get("SLURM_NTASKS", "1")) > 1
          or env.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0):
        jax.distributed.initialize()  # JAX reads SLURM / TPU metadata itself
    else:
        return False
    _done = True
    return True
