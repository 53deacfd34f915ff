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
# The variables that make a process one of many (read below); a child started without them is a single process.
MULTI_PROCESS_ENV = ("JAXADAPT_COORDINATOR", "JAXADAPT_NUM_PROCESSES", "JAXADAPT_PROCESS_ID", "JAXADAPT_DISTRIBUTED",
                     "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES")


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


def process_slot() -> tuple[int, int]:
    """(this process's index, the process count) as the launcher's environment states them, without starting
    JAX (a recipe runner must not hold the coordinator its train stages start): the explicit variables, SLURM's,
    or a TPU pod's (TPU_WORKER_ID, set by scripts/tpu/launch.sh from the VM's metadata)."""
    env = os.environ
    for index, count in (("JAXADAPT_PROCESS_ID", "JAXADAPT_NUM_PROCESSES"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if env.get(index) and env.get(count):
            return int(env[index]), int(env[count])
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1 and env.get("TPU_WORKER_ID"):
        return int(env["TPU_WORKER_ID"]), len(hosts)
    return 0, 1
