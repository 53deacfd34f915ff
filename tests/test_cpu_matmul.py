"""The XLA:CPU decode matmul (jaxadapt/cpu_matmul.cc): built from source here, equal to a float64 reference on
every tail of its 4-row / 4-output / 16-lane blocking, correct when XLA runs several at once, and optional."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxadapt import cpu_matmul

needs_compiler = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
                                    reason="no C++ compiler to build the kernel with")


@needs_compiler
@pytest.mark.parametrize("m,k,n", [(1, 576, 1536), (8, 576, 200), (5, 570, 133), (9, 17, 3), (3, 16, 65),
                                   (16, 40, 1)])
def test_matches_a_float64_reference(m, k, n):
    assert cpu_matmul.available()
    r = np.random.default_rng(m * 1000 + n)
    x, w = r.standard_normal((m, k), np.float32), r.standard_normal((n, k), np.float32)
    got = np.asarray(jax.jit(cpu_matmul.matmul_nt)(x, w))
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@needs_compiler
def test_independent_calls_in_one_program():
    """q, k and v of a decode step are independent, so XLA may run their calls at once on its threads; each call
    finishes its own work even when no pool thread is free for it."""
    assert cpu_matmul.available()
    r = np.random.default_rng(0)
    x = r.standard_normal((4, 64), np.float32)
    ws = [r.standard_normal((n, 64), np.float32) for n in (512, 256, 256, 1024)]
    got = jax.jit(lambda x, ws: [cpu_matmul.matmul_nt(jnp.tanh(x), w) for w in ws])(x, ws)
    for g, w in zip(got, ws):
        np.testing.assert_allclose(np.asarray(g), np.tanh(x) @ w.T, rtol=1e-5, atol=1e-4)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "_loaded", {})
    monkeypatch.setenv("JAXADAPT_CPU_KERNELS", "0")
    assert not cpu_matmul.available()


def test_a_failing_compiler_is_a_warning_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_matmul, "_loaded", {})
    monkeypatch.setenv("JAXADAPT_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # exits 1
    with pytest.warns(UserWarning, match="CPU decode kernel unavailable"):
        assert not cpu_matmul.available()
