"""When a process is one of several: SLURM variables without an srun step (salloc, the batch script itself) mean a
single process with a warning, not a crash in jax.distributed.initialize()."""

import jax
import pytest
from jax._src.clusters.slurm_cluster import SlurmCluster

from jaxadapt.train import distributed

SALLOC = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_NODELIST": "gpu[1-2]", "SLURM_JOB_NODELIST": "gpu[1-2]"}
BATCH = {**SALLOC, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}  # sbatch's shell: no step
SRUN = {**BATCH, "SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "gpu[1-2]",
        "SLURM_STEP_NUM_NODES": "2"}


@pytest.fixture
def slurm_env(monkeypatch):
    for k in ("JAXADAPT_COORDINATOR", "JAXADAPT_NUM_PROCESSES", "JAXADAPT_PROCESS_ID", "JAXADAPT_DISTRIBUTED",
              "TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", *SRUN):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(distributed, "_done", False)
    monkeypatch.setattr(distributed, "_warned", False)
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))

    def set_env(env):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return calls

    return set_env


@pytest.mark.parametrize("env", [SALLOC, BATCH], ids=["salloc", "sbatch-shell"])
def test_slurm_tasks_without_srun_run_as_one_process_with_a_warning(slurm_env, env, capsys):
    calls = slurm_env(env)
    assert distributed.maybe_initialize() is False and calls == []
    assert distributed.process_slot() == (0, 1)
    err = capsys.readouterr().err
    assert err.count("warning: SLURM_NTASKS=2 but this process was not started by srun") == 1, err
    assert "SLURM_STEP_NODELIST" in err and "running as a single process" in err
    assert not SlurmCluster.is_env_present()  # what jax.distributed.initialize() would have failed on


def test_an_srun_task_starts_jax_distributed(slurm_env, capsys):
    calls = slurm_env(SRUN)
    assert distributed.process_slot() == (1, 2)
    assert distributed.maybe_initialize() is True and calls == [((), {})]  # JAX reads srun's variables itself
    assert capsys.readouterr().err == ""
    assert SlurmCluster.is_env_present()  # distributed.SLURM_STEP_ENV is what JAX's detection reads


def test_one_slurm_task_is_one_process(slurm_env, capsys):
    calls = slurm_env({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
    assert distributed.maybe_initialize() is False and calls == []
    assert capsys.readouterr().err == ""
