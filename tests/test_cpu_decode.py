"""The XLA:CPU decode kernels (jaxadapt/cpu_decode.cc), built from source here: the matmul on packed weights equals a
float64 reference for every remainder of its 8-row blocking, for outputs that do not fill the last panel, and when XLA
runs several at once; the attention equals a float64 masked, grouped-query softmax over any layer of a stacked cache
(its exp within float32 rounding of numpy's); both are optional."""

import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadapt import cpu_decode

needs_compiler = pytest.mark.skipif(cpu_decode.compiler() is None, reason="no C++ compiler to build the kernels with")


# bfloat16 results are float32 sums rounded once: within half a bfloat16 ulp (2^-9 relative) of the exact value
TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-5), "bfloat16": dict(rtol=2 ** -8, atol=1e-5)}


def _cast(dtype, *arrays):
    """The arrays in `dtype` (jax) and their values as float64 (numpy), for the references."""
    out = [jnp.asarray(a, dtype) for a in arrays]
    return out, [np.asarray(a.astype(jnp.float32), np.float64) for a in out]


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("m,k,n", [(1, 576, 1536), (8, 576, 192), (5, 570, 133), (9, 17, 3), (3, 16, 65),
                                   (16, 40, 1), (23, 64, 96), (7, 1, 32)])
def test_matches_a_float64_reference(m, k, n, dtype):
    assert cpu_decode.available()
    r = np.random.default_rng(m * 1000 + n)
    (x, w), (x64, w64) = _cast(dtype, r.standard_normal((m, k)), r.standard_normal((k, n)))
    packed = cpu_decode.pack(w)
    assert packed.shape == (-(-n // cpu_decode.PANEL), k, cpu_decode.PANEL) and packed.dtype == dtype
    got = jax.jit(cpu_decode.matmul)(x, packed)
    assert got.shape == (m, packed.shape[0] * cpu_decode.PANEL) and got.dtype == dtype
    got = np.asarray(got.astype(jnp.float32))
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got[:, :n], x64 @ w64, rtol=tol["rtol"], atol=tol["atol"] * np.sqrt(k))
    assert not got[:, n:].any()  # the padding's outputs


@needs_compiler
@pytest.mark.parametrize("m,k,n", [(1, 576, 1536), (8, 576, 192), (11, 40, 64)])
def test_float32_rows_on_bfloat16_weights_equal_float32_weights_of_the_same_values(m, k, n):
    """Weights that are exact bfloat16 values may be packed as bfloat16 under float32 x: the same float32 products,
    bit for bit."""
    r = np.random.default_rng(m + n)
    x = jnp.asarray(r.standard_normal((m, k)), jnp.float32)
    w = jnp.asarray(r.standard_normal((k, n)), jnp.bfloat16)
    narrow = jax.jit(cpu_decode.matmul)(x, cpu_decode.pack(w))
    assert narrow.dtype == jnp.float32
    np.testing.assert_array_equal(narrow, jax.jit(cpu_decode.matmul)(x, cpu_decode.pack(w.astype(jnp.float32))))


@needs_compiler
def test_independent_calls_in_one_program():
    """q, k and v of a decode step are independent, so XLA may run their calls at once on its threads; each call
    finishes its own work even when no pool thread is free for it."""
    assert cpu_decode.available()
    r = np.random.default_rng(0)
    x = r.standard_normal((4, 64), np.float32)
    ws = [r.standard_normal((64, n), np.float32) for n in (512, 256, 256, 1024)]
    got = jax.jit(lambda x, ws: [cpu_decode.matmul(jnp.tanh(x), cpu_decode.pack(w)) for w in ws])(x, ws)
    for g, w in zip(got, ws):
        np.testing.assert_allclose(np.asarray(g), np.tanh(x) @ w, rtol=1e-5, atol=1e-4)


@needs_compiler
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("layer,scale", [(0, 0.3), (3, 0.3), (1, 8.0)])  # at 8.0 many weights underflow to 0
def test_attention_matches_a_float64_reference(layer, scale, dtype):
    r = np.random.default_rng(layer)
    L, B, KVH, S, D, H = 4, 3, 2, 40, 24, 6  # 3 query heads per KV head
    (q, k, v), (q64, k64, v64) = _cast(dtype, r.standard_normal((B, H, D)), r.standard_normal((L, B, KVH, S, D)),
                                       r.standard_normal((L, B, KVH, S, D)))
    valid = r.random((B, S)) < 0.6
    valid[:, 0] = True
    valid[1, 16:32] = False  # a whole block of 16 keys masked
    got = jax.jit(lambda *a: cpu_decode.attention(*a, layer=layer, scale=scale))(q, k, v, valid)
    assert got.dtype == dtype
    keys, values = (np.repeat(x[layer], H // KVH, axis=1) for x in (k64, v64))  # [B, H, S, D]
    scores = np.where(valid[:, None], np.einsum("bhd,bhsd->bhs", q64, keys) * scale, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    want = np.einsum("bhs,bhsd->bhd", probs / probs.sum(-1, keepdims=True), values)
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), want, **TOLERANCE[dtype])


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setattr(cpu_decode, "_loaded", {})
    monkeypatch.setenv("JAXADAPT_CPU_KERNELS", "0")
    assert not cpu_decode.available()


def test_a_failing_compiler_is_a_warning_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_decode, "_loaded", {})
    monkeypatch.setenv("JAXADAPT_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # exits 1
    with pytest.warns(UserWarning, match="CPU decode kernels unavailable"):
        assert not cpu_decode.available()


@needs_compiler
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="-mno-avx512f is an x86 flag")
def test_the_plain_loops_match_too(tmp_path):
    """CPUs without AVX-512 (or with a compiler that lacks it) get the plain loops after each #else in
    cpu_decode.cc: the reference tests above, rerun on a build with AVX-512 switched off."""
    env = {**os.environ, "JAXADAPT_CPU_KERNEL_FLAGS": "-mno-avx512f", "JAXADAPT_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                           "reference or independent"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
    assert len(list((tmp_path / "kernels").glob("cpu_decode-*.so"))) == 1  # built here, with the flag
