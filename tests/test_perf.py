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
