"""Multi-process start-up: call `jax.distributed.initialize()` when the environment says this is one process
of many (a TPU pod slice, a SLURM job with several tasks, or explicit coordinator variables), never otherwise.

Explicit form (any launcher): JAXADAPT_COORDINATOR=host:port JAXADAPT_NUM_PROCESSES=N JAXADAPT_PROCESS_ID=i.
JAXADAPT_DISTRIBUTED=1 asks for JAX's own cluster detection (GCE TPU metadata, SLURM, ...) when no variable
above is visible, as in a command started over ssh on each worker of a TPU pod (scripts/tpu/launch.sh sets it).

SLURM: only a task that `srun` started is one of several processes. An allocation's environment (`salloc`, or the
batch script of `sbatch` itself) has SLURM_NTASKS > 1 too, but no job step; a process started there runs alone, with
a warning, rather than failing in jax.distributed.initialize() with "coordinator_address should be defined".
"""

from __future__ import annotations

import os
import sys

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
    elif (env.get("JAXADAPT_DISTRIBUTED") == "1" or slurm_tasks() > 1
          or env.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0):
        jax.distributed.initialize()  # JAX reads SLURM / TPU metadata itself
    else:
        return False
    _done = True
    return True


# What JAX's SLURM detection reads (jax/_src/clusters/slurm_cluster.py): the step's node list, and this task's
# global and node-local index, exist only in a process that srun started.
SLURM_STEP_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
_warned = False


def slurm_tasks() -> int:
    """The number of SLURM tasks this process is one of: SLURM_NTASKS inside an srun step, else 1 (with a warning
    once when SLURM_NTASKS says more)."""
    global _warned
    env = os.environ
    try:
        ntasks = int(env.get("SLURM_NTASKS", "1"))
    except ValueError:
        return 1
    if ntasks <= 1:
        return 1
    if all(env.get(k) for k in SLURM_STEP_ENV):
        return ntasks
    if not _warned:
        _warned = True
        missing = ", ".join(k for k in SLURM_STEP_ENV if not env.get(k))
        print(f"warning: SLURM_NTASKS={ntasks} but this process was not started by srun (no {missing}): running as "
              f"a single process; start it with srun (scripts/gpu/job.sbatch) to use all {ntasks} tasks",
              file=sys.stderr, flush=True)
    return 1


def process_slot() -> tuple[int, int]:
    """(this process's index, the process count) as the launcher's environment states them, without starting
    JAX (a recipe runner must not hold the coordinator its train stages start): the explicit variables, SLURM's,
    or a TPU pod's (TPU_WORKER_ID, set by scripts/tpu/launch.sh from the VM's metadata)."""
    env = os.environ
    if env.get("JAXADAPT_PROCESS_ID") and env.get("JAXADAPT_NUM_PROCESSES"):
        return int(env["JAXADAPT_PROCESS_ID"]), int(env["JAXADAPT_NUM_PROCESSES"])
    if slurm_tasks() > 1:
        return int(env["SLURM_PROCID"]), slurm_tasks()
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1 and env.get("TPU_WORKER_ID"):
        return int(env["TPU_WORKER_ID"]), len(hosts)
    return 0, 1
