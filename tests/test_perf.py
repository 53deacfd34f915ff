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


def test_device_bench_dry_run_prints_the_plan_of_each_step():
    """scripts/bench/device.py is run by hand on an accelerator; its dry run works anywhere: the FLOPs per token that
    MFU divides by, and for each (mode, batch) the per-device memory `jaxadapt plan` predicts for that step, which a
    device run prints next to the measured peak."""
    import subprocess
    import sys
    from pathlib import Path

    from jaxadapt.config.presets import model_preset
    from jaxadapt.sharding import parse_mesh
    from jaxadapt.train.plan import compile_plan

    script = Path(__file__).parents[1] / "scripts" / "bench" / "device.py"
    done = subprocess.run([sys.executable, str(script), "--dry-run", "--preset", "smollm2-135m", "--seq", "64",
                           "--batches", "2", "--modes", "lora"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    flops = perf.train_flops_per_token(model_preset("smollm2-135m"), 64)
    assert "smollm2-135m" in done.stdout and f"{flops:.3e}" in done.stdout
    (row,) = json.loads(done.stdout.split("RESULT ")[1])
    plan = compile_plan("smollm2-135m", parse_mesh("data=1"), "lora", 2, 64, "float32", compute_dtype="bfloat16")
    assert row == {"mode": "lora", "batch": 2, "seq": 64, "plan_bytes": plan["total"]}
    assert f"lora batch   2 x 64: plan {plan['total'] / 2 ** 30:8.3f} GiB per device" in done.stdout
