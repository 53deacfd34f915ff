"""Two processes on localhost (jax.distributed, 4 CPU devices each) train exactly like one process with 8."""

import os
import socket
import subprocess

import numpy as np
from trainhelpers import logged_losses, train_command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_reproduce_the_single_process_losses(setup):
    root = setup
    common = ("train.steps=4", "checkpoint.every=2", "data.host_sharding=rows", "data.validation_fraction=0")
    single = subprocess.run(train_command(root, "one_process", *common), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]

    port = _free_port()
    procs = []
    for i in range(2):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                   JAXADAPT_COORDINATOR=f"127.0.0.1:{port}", JAXADAPT_NUM_PROCESSES="2", JAXADAPT_PROCESS_ID=str(i))
        procs.append(subprocess.Popen(train_command(root, "two_processes", *common), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]

    want = logged_losses(root / "runs" / "one_process")
    got = logged_losses(root / "runs" / "two_processes")
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    np.testing.assert_allclose([got[s] for s in range(1, 5)], [want[s] for s in range(1, 5)], atol=1e-5, rtol=0)
    # Both processes took part in the (collective) checkpoint; only process 0 wrote metrics.
    assert sorted(p.name for p in (root / "runs" / "two_processes" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["2", "4"]
