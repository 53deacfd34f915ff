"""A float32 matmul for decoding on XLA:CPU: y = x @ w.T for the few rows of x that one decoded token has.

At batch 8, XLA:CPU's dot reads SmolLM2's weights at ~10 GB/s, half of what the machine streams (~20 GB/s), and
decoding is bound by that read. `cpu_matmul.cc` reads each weight row once as a sequential stream and multiplies it
with up to four input rows held in L1; it runs as an XLA FFI custom call, split over XLA's intra-op threads.
It is compiled on first use (the system C++ compiler, -march=native) into the cache dir, keyed by the source, the
compiler, jaxlib and the CPU. Without a compiler, off the CPU backend, or with JAXADAPT_CPU_KERNELS=0,
`available()` is False and decoding keeps XLA's dot (jaxadapt.generate).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

SOURCE = Path(__file__).with_name("cpu_matmul.cc")
TARGET = "jaxadapt_matmul_nt"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd", "-w")
_loaded: dict[str, bool] = {}


def available() -> bool:
    """Whether matmul_nt can run here (builds and registers the custom call once per process)."""
    if "ok" not in _loaded:
        _loaded["ok"] = _load()
    return _loaded["ok"]


def matmul_nt(x, w):
    """x [M, K] @ w [N, K].T -> [M, N], float32, through the custom call (call only when `available()`)."""
    return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((x.shape[0], w.shape[0]), jnp.float32))(x, w)


def _load() -> bool:
    if os.environ.get("JAXADAPT_CPU_KERNELS", "1") == "0" or jax.default_backend() != "cpu":
        return False
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.CalledProcessError) as e:
        warnings.warn(f"jaxadapt: CPU decode kernel unavailable, decoding uses XLA's dot ({e})", stacklevel=3)
        return False
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.JaxadaptMatmulNT), platform="cpu")
    return True


def _build() -> Path:
    """The compiled library in the cache, built (to a temporary name, then renamed) when missing."""
    from jaxadapt.assets import cache_dir

    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        raise OSError("no C++ compiler: set CXX or put g++ / c++ / clang++ on PATH")
    import jaxlib

    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join([cxx, *FLAGS]).encode(), jaxlib.__version__.encode(),
                                     platform.machine().encode(), _cpu_flags()])).hexdigest()[:16]
    out = cache_dir("kernels") / f"cpu_matmul-{key}.so"
    if not out.exists():
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        proc = subprocess.run([cxx, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(tmp)],
                              capture_output=True, text=True)
        if proc.returncode:
            tmp.unlink(missing_ok=True)
            raise OSError(f"{cxx} failed on {SOURCE.name}: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, out)
    return out


def _cpu_flags() -> bytes:
    """The CPU's feature flags (-march=native code is only valid on CPUs that have them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor().encode()
    return next((line for line in text.splitlines() if line.startswith("flags")), "").encode()
