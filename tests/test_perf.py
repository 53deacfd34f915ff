"""The CPU matmul peak behind MFU: the best measurement on this machine is remembered, so MFU stays <= 100% even
when the calibration of one run was slowed down by other work."""

from __future__ import annotations

import json

from jaxadapt import perf


def test_cpu_peak_keeps_the_best_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXADAPT_CACHE", str(tmp_path))
    monkeypatch.setattr(perf, "_CALIBRATED", {})
    measured = perf.measured_matmul_flops(n=256, repeats=3)
    store = tmp_path / "perf" / "matmul-peak.json"
    (key, value), = json.loads(store.read_text()).items()
    assert value == measured > 0 and key.startswith("256-float32-")

    store.write_text(json.dumps({key: 1e18}))  # an earlier, better measurement wins over this process's
    monkeypatch.setattr(perf, "_CALIBRATED", {})
    assert perf.measured_matmul_flops(n=256, repeats=3) == 1e18

    store.write_text(json.dumps({key: 1.0}))  # a worse stored one is replaced
    monkeypatch.setattr(perf, "_CALIBRATED", {})
    again = perf.measured_matmul_flops(n=256, repeats=3)
    assert again > 1.0 and json.loads(store.read_text())[key] == again


def test_device_bench_dry_run_states_its_plan():
    """scripts/bench/device.py is run by hand on an accelerator; its dry run works anywhere, with the same FLOPs per
    token that MFU divides by."""
    import subprocess
    import sys
    from pathlib import Path

    from jaxadapt.config.presets import model_preset

    script = Path(__file__).parents[1] / "scripts" / "bench" / "device.py"
    done = subprocess.run([sys.executable, str(script), "--dry-run", "--seq", "1024"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    flops = perf.train_flops_per_token(model_preset("llama3.2-1b"), 1024)
    assert "llama3.2-1b" in done.stdout and f"{flops:.3e}" in done.stdout
