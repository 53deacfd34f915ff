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


def least_squares(x: np.ndarray, y: np.ndarray) -> Fit:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d, *_ = np.linalg.lstsq(x, y, rcond=None)
    return Fit(d, _relative(x @ d, y), x.shape[0])


def estimate(method: str, base: np.ndarray, inst: np.ndarray, *, common: np.ndarray | None = None,
             transform=None) -> Fit:
    """D for one matrix. base/inst: [old vocab, d] rows; common: old ids the new vocabulary shares (overlap);
    transform: a jaxadapt.vocab.transform.Transform built with "mean" (conversion)."""
    if method == "swap":
        return Fit(np.eye(base.shape[1]), _relative(base, inst), base.shape[0])
    if method == "overlap":
        return least_squares(base[common], inst[common])
    if method == "conversion":
        return least_squares(transform.apply(np.asarray(base, np.float64)),
                             transform.apply(np.asarray(inst, np.float64)))
    raise ValueError(f"unknown propagation method {method!r}; expected one of {METHODS}")


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))
