"""The d x d maps of Learned Embedding Propagation (METHODS.md §4), estimated in float64.

Instruct tuning changed the embeddings roughly linearly, E_inst ≈ E_base · D. Given a donor's embeddings for a
new vocabulary (learned on top of the base), the instruct model's version is E_donor · D. The methods differ in
how D is estimated:
  swap        D = I (take the donor rows as they are);
  overlap     least squares over the old tokens that the new vocabulary also has: E_base[C] D ≈ E_inst[C];
  conversion  least squares through the mean-init transform T of the new vocabulary: (T E_base) D ≈ T E_inst.
              T is applied, not factored out: the fit is weighted the way the new vocabulary uses the old rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("swap", "overlap", "conversion")


@dataclass(frozen=True)
class Fit:
    matrix: np.ndarray  # D, [d, d] float64
    residual: float  # ||X D - Y||_F / ||Y||_F over the rows the fit used (swap: X - Y)
    rows: int  # how many rows the fit used


_CHUNK = 8192  # rows per float64 pass


def least_squares(x: np.ndarray, y: np.ndarray) -> Fit:
    """argmin_D ||x D - y|| through the normal equations, x^T x D = x^T y, both sides accumulated in float64 over
    chunks of rows: memory and time scale with d^2, not with rows x d in float64 (a 128K vocabulary at d = 4096 is
    4 GB per matrix in float64, and an SVD of it takes minutes). Embedding matrices are well conditioned, so
    squaring the condition number costs nothing at float64. A Gram matrix that is not positive definite (x of lower
    rank) is solved by its pseudo-inverse, as lstsq on x would be."""
    n, d = x.shape
    gram, rhs = np.zeros((d, d)), np.zeros((d, y.shape[1]))
    for i in range(0, n, _CHUNK):
        xs, ys = np.asarray(x[i:i + _CHUNK], np.float64), np.asarray(y[i:i + _CHUNK], np.float64)
        gram += xs.T @ xs
        rhs += xs.T @ ys
    try:
        np.linalg.cholesky(gram)  # the cheap test of full rank; lstsq (an SVD) of a 2048^2 matrix takes minutes
        matrix = np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(gram)
        keep = w > w.max() * d * np.finfo(np.float64).eps
        matrix = v[:, keep] @ ((v[:, keep].T @ rhs) / w[keep, None])
    err = ref = 0.0
    for i in range(0, n, _CHUNK):
        ys = np.asarray(y[i:i + _CHUNK], np.float64)
        err += float(np.sum((np.asarray(x[i:i + _CHUNK], np.float64) @ matrix - ys) ** 2))
        ref += float(np.sum(ys ** 2))
    return Fit(matrix, float(np.sqrt(err / max(ref, 1e-60))), n)


def estimate(method: str, base: np.ndarray, inst: np.ndarray, *, common: np.ndarray | None = None,
             transform=None) -> Fit:
    """D for one matrix. base/inst: [old vocab, d] rows; common: old ids the new vocabulary shares (overlap);
    transform: a jaxadapt.vocab.transform.Transform built with "mean" (conversion)."""
    if method == "swap":
        return Fit(np.eye(base.shape[1]), _relative(base, inst), base.shape[0])
    if method == "overlap":
        return least_squares(base[common], inst[common])
    if method == "conversion":
        return least_squares(transform.apply(base), transform.apply(inst))  # rows summed in float64 by apply
    raise ValueError(f"unknown propagation method {method!r}; expected one of {METHODS}")


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))
