"""Kernels for decoding on XLA:CPU in float32 or bfloat16 (float32 arithmetic either way), as XLA FFI custom calls
split over XLA's intra-op threads:
- `matmul`: y = x @ w for the few rows of x that one decoded token has, with w packed (`pack`) into panels of
  PANEL outputs. Decoding is bound by reading the weights, and at a few rows XLA:CPU's dot reads them at about half
  of what the machine streams (README, Performance); `cpu_decode.cc` reads the packed weights once, as one
  sequential stream prefetched ahead, against up to eight rows of x at a time.
- `attention`: one new token's attention over a layer of the stacked KV cache, read in place (XLA copies the
  layer's keys and values out of the stack first).
They are compiled on first use (the system C++ compiler, -march=native) into the cache dir, keyed by the source, the
compiler and its flags (JAXADAPT_CPU_KERNEL_FLAGS adds some, e.g. -mno-avx512f for the plain loops), jaxlib
and the CPU. Without a compiler, off the CPU backend, or with JAXADAPT_CPU_KERNELS=0,
`available()` is False and decoding keeps XLA's ops (jaxadapt.generate).
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
import numpy as np

SOURCE = Path(__file__).with_name("cpu_decode.cc")
TARGETS = {"jaxadapt_matmul": "JaxadaptMatmul", "jaxadapt_decode_attention": "JaxadaptDecodeAttention"}
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd", "-w")
PANEL = 32  # outputs per weight panel (kPanel in cpu_decode.cc)
_loaded: dict[str, bool] = {}


def available() -> bool:
    """Whether the kernels can run here (builds and registers the custom calls once per process)."""
    if "ok" not in _loaded:
        _loaded["ok"] = _load()
    return _loaded["ok"]


def pack(w):
    """w [K, N] as `matmul` reads it: [ceil(N / PANEL), K, PANEL], panel p holding outputs p * PANEL ... (zeros past
    N), so that one panel is one contiguous run of memory."""
    k, n = w.shape
    w = jnp.pad(w, ((0, 0), (0, -n % PANEL)))
    return w.reshape(k, -1, PANEL).transpose(1, 0, 2)


def matmul(x, packed):
    """x [M, K] @ the [K, N] matrix that `pack` gave `packed` -> [M, N rounded up to PANEL] (the padded outputs are
    0) in x's dtype: both float32, both bfloat16, or float32 x with bfloat16 weights (the float32 products of their
    exact values; see jaxadapt.generate.decode_copy) (call only when `available()`)."""
    n = packed.shape[0] * PANEL
    return jax.ffi.ffi_call("jaxadapt_matmul", jax.ShapeDtypeStruct((x.shape[0], n), x.dtype))(x, packed)


def attention(q, k, v, valid, layer: int, scale: float):
    """One token's attention over `layer` of the stacked caches, all float32 or all bfloat16 (call only when
    `available()`):
    q [B, H, D]; k, v [L, B, KVH, S, D] (H a multiple of KVH, query heads grouped per KV head; with a bfloat16 q, k
    and v may hold uint16 bit patterns, as jaxadapt.model.KVCache keeps them); valid [B, S] bool
    -> [B, H, D]. Masked slots score -FLT_MAX before the softmax, as in jaxadapt.model.cached_attention."""
    return jax.ffi.ffi_call("jaxadapt_decode_attention", jax.ShapeDtypeStruct(q.shape, q.dtype))(
        q, k, v, valid, layer=np.int64(layer), scale=np.float32(scale))


def _load() -> bool:
    if os.environ.get("JAXADAPT_CPU_KERNELS", "1") == "0" or jax.default_backend() != "cpu":
        return False
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.CalledProcessError) as e:
        warnings.warn(f"jaxadapt: CPU decode kernels unavailable, decoding uses XLA's ops ({e})", stacklevel=3)
        return False
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return True


def compiler() -> str | None:
    """The C++ compiler the kernels are built with: $CXX, else g++, c++ or clang++ on PATH (None: none found)."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _build() -> Path:
    """The compiled library in the cache, built (to a temporary name, then renamed) when missing."""
    from jaxadapt.fs import cache_dir

    cxx = compiler()
    if cxx is None:
        raise OSError("no C++ compiler: set CXX or put g++ / c++ / clang++ on PATH")
    import jaxlib

    flags = [*FLAGS, *os.environ.get("JAXADAPT_CPU_KERNEL_FLAGS", "").split()]
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join([cxx, *flags]).encode(), jaxlib.__version__.encode(),
                                     platform.machine().encode(), _cpu_flags()])).hexdigest()[:16]
    out = cache_dir("kernels") / f"cpu_decode-{key}.so"
    if not out.exists():
        tmp = out.with_name(f".{out.name}.{os.getpid()}")
        proc = subprocess.run([cxx, *flags, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(tmp)],
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
