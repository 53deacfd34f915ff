"""A wheel is a complete install: built from the source files, installed where it shadows the editable install, and
run from outside the checkout, it plans a model preset and dry-runs a study recipe by name (both read from the
package data that config/shipped.py finds)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, **kw) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_a_wheel_holds_the_configs_and_runs_them_from_outside_the_checkout(tmp_path):
    src = tmp_path / "src"  # a copy, so the build writes nothing into the checkout
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    for d in ("jaxadapt", "configs"):
        shutil.copytree(ROOT / d, src / d, symlinks=True, ignore=skip)
    assert (src / "jaxadapt" / "configs").is_symlink()  # the package links to configs/: one copy of each file

    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
          str(src)])
    wheel = next((tmp_path / "dist").glob("jaxadapt-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix("jaxadapt/configs/") for n in z.namelist() if n.startswith("jaxadapt/configs/")}
    want = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").glob("*/*.yaml")}
    assert want and want <= shipped  # every preset, study recipe and experiment

    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(site),
          str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one device: the plan simulates its own mesh
    kw = {"cwd": elsewhere, "env": env}
    where = _run([sys.executable, "-c", "import jaxadapt; print(jaxadapt.__file__)"], **kw).strip()
    assert Path(where).is_relative_to(site), where  # the wheel's copy, not the checkout's

    jaxadapt = str(site / "bin" / "jaxadapt")
    out = _run([jaxadapt, "plan", "smollm2-135m", "--batch", "2", "--seq", "64"], **kw)
    assert "plan: smollm2-135m" in out and "params: 134.5M trainable" in out
    out = _run([jaxadapt, "run", "chocollama-lora", "--dry-run", f"runs_root={tmp_path / 'runs'}"], **kw)
    assert out.count("would run: jaxadapt") == 3 and f"run dir: {tmp_path / 'runs' / 'chocollama-lora'}" in out, out
    assert not (tmp_path / "runs").exists() and not any(elsewhere.iterdir())
