"""New tokens as sparse combinations of anchor tokens, found in an auxiliary vector space (METHODS.md §2).

Anchors are tokens both vocabularies have, so each has an old embedding row and an auxiliary vector. A new token's
weights over the anchors are found from the auxiliary vectors alone, then applied to the anchors' old rows:
- focus (Dobler & de Melo 2023): sparsemax of the cosine similarities to every anchor, a convex combination of the
  few most similar anchors;
- knn: the k most similar anchors, weighted by their (positive) cosine similarity, as mergekit's tokensurgeon's
  distance-proportional interpolation;
- omp (tokensurgeon, Goddard & Fernandes Neto 2025): orthogonal matching pursuit picks k anchors whose auxiliary
  vectors reconstruct the token's by least squares, and the same coefficients build its row. tokensurgeon's
  auxiliary space is another LM's embedding matrix, where raw (also negative) coefficients carry over. A fastText
  space is no linear image of the model's: with tokensurgeon's rule (picks by |correlation|, raw coefficients) the
  rows leave the model's scale and start far behind mean (EXPERIMENTS.md (g) has the figures). So here OMP fits
  unit vectors, picks only positively correlated anchors and keeps a convex combination (coefficients clipped at 0,
  summing to 1), which keeps every row inside the hull of real rows.
Every function returns a [targets, anchors] sparse matrix of weights; ties are broken by the lower anchor index, so
the result depends only on the inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_CHUNK = 1024  # targets per block: bounds the [chunk, anchors] similarity matrix


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def sparsemax(z: np.ndarray) -> np.ndarray:
    """Row-wise sparsemax (Martins & Astudillo 2016): the Euclidean projection of each row onto the simplex."""
    zs = -np.sort(-z, axis=1)
    k = np.arange(1, z.shape[1] + 1)
    cums = np.cumsum(zs, axis=1)
    support = 1 + k * zs > cums  # true for a prefix of the sorted row
    kz = support.sum(axis=1)
    tau = (cums[np.arange(len(z)), kz - 1] - 1) / kz
    return np.maximum(z - tau[:, None], 0.0)


def focus_weights(targets: np.ndarray, anchors: np.ndarray) -> sp.csr_array:
    a = unit_rows(anchors)
    blocks = []
    for start in range(0, len(targets), _CHUNK):
        w = sparsemax(unit_rows(targets[start:start + _CHUNK]) @ a.T)
        blocks.append(sp.csr_array(w))
    return _stack(blocks, len(anchors))


def knn_weights(targets: np.ndarray, anchors: np.ndarray, k: int) -> sp.csr_array:
    a = unit_rows(anchors)
    k = min(k, len(anchors))
    rows, cols, vals = [], [], []
    for start in range(0, len(targets), _CHUNK):
        sim = unit_rows(targets[start:start + _CHUNK]) @ a.T
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        s = np.maximum(np.take_along_axis(sim, top, axis=1), 0.0)
        s[s.sum(axis=1) == 0] = 1.0  # nothing similar at all: the plain mean of the k nearest
        w = s / s.sum(axis=1, keepdims=True)
        rows.append(np.repeat(np.arange(start, start + len(top)), k))
        cols.append(top.ravel())
        vals.append(w.ravel())
    return _coo(rows, cols, vals, len(targets), len(anchors))


def omp_weights(targets: np.ndarray, anchors: np.ndarray, k: int, ridge: float = 1e-8) -> sp.csr_array:
    """Batched OMP on unit vectors: k greedy picks by positive correlation with the residual, each followed by a
    least-squares refit on the picks; the final coefficients are clipped at 0 and scaled to sum to 1."""
    a = unit_rows(anchors)
    k = min(k, len(a), a.shape[1])
    rows, cols, vals = [], [], []
    for start in range(0, len(targets), _CHUNK):
        x = unit_rows(targets[start:start + _CHUNK])
        n = len(x)
        picked = np.zeros((n, k), np.int64)
        taken = np.zeros((n, len(a)), bool)
        resid, coef = x.copy(), np.zeros((n, 0))
        for t in range(k):
            corr = resid @ a.T
            corr[taken] = -np.inf
            picked[:, t] = np.argmax(corr, axis=1)
            taken[np.arange(n), picked[:, t]] = True
            atoms = a[picked[:, : t + 1]]  # [n, t+1, dim]
            gram = atoms @ atoms.transpose(0, 2, 1)
            gram += ridge * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(t + 1)
            coef = np.linalg.solve(gram, (atoms @ x[:, :, None]))[..., 0]
            resid = x - (coef[:, None, :] @ atoms)[:, 0]
        coef = np.maximum(coef, 0.0)
        coef[coef.sum(axis=1) == 0, 0] = 1.0  # nothing correlates positively: the first pick alone
        coef /= coef.sum(axis=1, keepdims=True)
        rows.append(np.repeat(np.arange(start, start + n), k))
        cols.append(picked.ravel())
        vals.append(coef.ravel())
    return _coo(rows, cols, vals, len(targets), len(anchors))


def _coo(rows, cols, vals, n: int, m: int) -> sp.csr_array:
    if not rows:
        return sp.csr_array((n, m))
    return sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, m))


def _stack(blocks, m: int) -> sp.csr_array:
    return sp.csr_array(sp.vstack(blocks, format="csr")) if blocks else sp.csr_array((0, m))


def combine(method: str, targets: np.ndarray, anchors: np.ndarray, k: int) -> sp.csr_array:
    """[len(targets), len(anchors)] weights of `method` (focus | knn | omp)."""
    if method == "focus":
        return focus_weights(targets, anchors)
    if method == "knn":
        return knn_weights(targets, anchors, k)
    if method == "omp":
        return omp_weights(targets, anchors, k)
    raise ValueError(method)
