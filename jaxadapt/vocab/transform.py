"""Initialise the embedding rows of a new vocabulary from the old one (METHODS.md §2), as one linear map T.

new_rows = T · [E_old; mean(E_old)]: T is sparse [new vocab, old vocab + 1], its last column standing for the mean of
all old rows, so mean-all rows and empty decompositions stay sparse too. Tokens the old vocabulary has (by string,
else by the bytes they stand for) and special tokens (by name) copy their old row; the rest follow the method.
LEP's "conversion" propagation needs exactly this T (built with "mean"), so it is a value of its own.
focus / knn / omp weigh the shared tokens by auxiliary vectors of the new tokens (auxvec.py, anchors.py); a new token
without a usable auxiliary vector gets the mean of its old-token decomposition instead. With mix < 1 a combined or
mapped row is mix * (the combination or mapping) + (1 - mix) * (the token's wmean decomposition): the combination
brings what the token means, the decomposition which token it is, and the old model's own reading of its bytes, which
a mapping through English loses where the model knew the language by its bytes (EXPERIMENTS.md (g), Russian).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from jaxadapt.errors import UserError
from jaxadapt.vocab.anchors import combine
from jaxadapt.vocab.auxvec import AuxVectors
from jaxadapt.vocab.surface import Decomposer, style, token_bytes
from jaxadapt.vocab.tokdir import BYTE_TOKEN, TokenizerDir

METHODS = ("mean", "wmean", "merge", "mean-all", "random", "mapping", "focus", "knn", "omp")
AUX_METHODS = ("focus", "knn", "omp")  # need auxiliary vectors (--aux-corpus)
AUX_K = 16  # knn / omp: anchors per new token
WMEAN_DECAY = 0.5  # wmean: weight of the i-th piece ∝ exp(-WMEAN_DECAY * i)
WMEAN_SPACE = 0.1  # wmean: relative weight of a piece that is only whitespace
_CHUNK = 4096


@dataclass
class Transform:
    """new rows = matrix · [old rows; their mean], except `random` rows, which are drawn."""

    matrix: sp.csr_array  # [new_size, old_size + 1]
    kinds: list[str]  # per new id: copy, special, mean, wmean, merge, mapping, mean-all, random, fallback, unused
    copy_from: np.ndarray  # per new id: the old id it copies bit-exactly, or -1
    old_size: int

    @property
    def new_size(self) -> int:
        return len(self.kinds)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kinds:
            out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items()))

    def apply(self, old: np.ndarray, seed: int = 0) -> np.ndarray:
        """The [new_size, dim] rows for old rows `old` ([>= old_size, dim]); sums in float64, copies bit-exact."""
        base = np.asarray(old[: self.old_size])
        out = np.empty((self.new_size, base.shape[1]), base.dtype)
        copied = self.copy_from >= 0
        out[copied] = base[self.copy_from[copied]]
        drawn = np.array([k == "random" for k in self.kinds], bool)
        if drawn.any():  # N(0, sigma) with sigma the spread of the old rows
            rng = np.random.default_rng(seed)
            out[drawn] = rng.normal(0.0, float(base.std()), (int(drawn.sum()), base.shape[1])).astype(base.dtype)
        mean = base.mean(axis=0, dtype=np.float64)
        rest = np.flatnonzero(~copied & ~drawn)
        for start in range(0, len(rest), _CHUNK):  # bounded memory: only the old rows a chunk uses, in float64
            ids = rest[start:start + _CHUNK]
            part = self.matrix[ids]
            cols = np.unique(part.indices)
            rows = base[np.minimum(cols, self.old_size - 1)].astype(np.float64)
            rows[cols == self.old_size] = mean
            out[ids] = (part[:, cols] @ rows).astype(base.dtype)
        return out


def build_transform(old: TokenizerDir, new: TokenizerDir, method: str = "mean",
                    mapping: dict[str, list[tuple[str, float]]] | None = None, aux: AuxVectors | None = None,
                    k: int = AUX_K, mix: float = 1.0) -> Transform:
    """T for initialising `new`'s rows from `old`'s. mapping: new token -> [(old token, weight)] ("mapping");
    aux: auxiliary vectors of `new`'s tokens (focus, knn, omp), k: anchors per token (knn, omp), mix: the share of
    the combination or mapping in a row, the rest being the token's wmean decomposition."""
    if method not in METHODS:
        raise UserError(f"--init {method!r}: expected one of {METHODS} (mapping as mapping:FILE)")
    if method in AUX_METHODS and aux is None:
        raise UserError(f"--init {method} needs auxiliary vectors: pass --aux-corpus with target-language text")
    if not 0.0 <= mix <= 1.0:
        raise UserError(f"--aux-mix {mix}: expected a share between 0 and 1")
    rule = _Rows(old, new, method, mapping or {}, mix)
    if method in AUX_METHODS:
        rule.combined = _combined(rule, new, method, aux, k)
    rows, cols, vals, kinds = [], [], [], []
    copy_from = np.full(new.size, -1, np.int64)
    for new_id, tok in enumerate(new.tokens):
        weights, kind = rule(tok)
        if kind in ("copy", "special"):
            copy_from[new_id] = next(iter(weights))
        rows += [new_id] * len(weights)
        cols += list(weights)
        vals += list(weights.values())
        kinds.append(kind)
    matrix = sp.csr_array((np.asarray(vals, np.float64), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
                          shape=(new.size, old.size + 1))
    return Transform(matrix, kinds, copy_from, old.size)


class _Rows:
    """One new token -> (old id -> weight, kind): the per-token rules of METHODS.md §2."""

    def __init__(self, old: TokenizerDir, new: TokenizerDir, method: str, mapping: dict, mix: float = 1.0):
        self.old, self.method, self.mapping, self.mix = old, method, mapping, mix
        self.old_style, self.new_style = style(old.spec), style(new.spec)
        self.old_added = {t["content"] for t in old.added}
        self.new_added = {t["content"] for t in new.added}
        self.by_bytes: dict[bytes, int] = {}
        plain = [(i, t) for i, t in enumerate(old.tokens) if t is not None and t not in self.old_added]
        for i, tok in sorted(plain, key=lambda it: bool(BYTE_TOKEN.fullmatch(it[1]))):  # "▁" before "<0x20>"
            self.by_bytes.setdefault(token_bytes(tok, self.old_style), i)
        self.decompose = Decomposer(old)
        self.makers: dict[str, tuple[str, str]] = {}  # token -> the highest-priority merge that builds it
        for a, b in (new.merges if new.model.get("type") == "BPE" else []):
            self.makers.setdefault(a + b, (a, b))
        self.memo: dict[str, dict[int, float]] = {}
        self.combined: dict[str, dict[int, float]] = {}  # focus / knn / omp: new token -> old id -> weight

    def __call__(self, tok: str | None) -> tuple[dict[int, float], str]:
        mean_all = {self.old.size: 1.0}
        if tok is None:
            return mean_all, "unused"
        i = self.old_id(tok)
        if i is not None:
            return {i: 1.0}, "special" if tok in self.new_added else "copy"
        if tok in self.new_added or self.method == "mean-all":
            return mean_all, "mean-all"
        if self.method == "random":
            return {}, "random"
        if self.method == "merge":
            return self.merged(tok), "merge"
        if self.method == "mapping" and tok in self.mapping:
            return self.blend(tok, {self.old.vocab[o]: w for o, w in self.mapping[tok]}), "mapping"
        if tok in self.combined:
            return self.combined[tok], self.method
        ids = self.decompose(token_bytes(tok, self.new_style))
        if not ids:
            return mean_all, "fallback"
        if self.method == "wmean":
            return _wmean(ids, self.old, self.old_style), "wmean"
        return _mean(ids), "mean"

    def old_id(self, tok: str) -> int | None:
        """The old token a new one is: special tokens by name, others by string (same style) or bytes."""
        if tok in self.new_added:
            return self.old.vocab.get(tok)
        if self.old_style == self.new_style and tok in self.old.vocab and tok not in self.old_added:
            return self.old.vocab[tok]
        return self.by_bytes.get(token_bytes(tok, self.new_style))

    def blend(self, tok: str, weights: dict[int, float]) -> dict[int, float]:
        """mix * weights + (1 - mix) * the token's wmean decomposition; the weights alone at mix 1 or when the token
        has no decomposition."""
        ids = self.decompose(token_bytes(tok, self.new_style)) if self.mix < 1 else []
        share = self.mix if ids else 1.0
        row = {j: share * w for j, w in weights.items() if w != 0}
        for j, w in (_wmean(ids, self.old, self.old_style) if ids else {}).items():
            row[j] = row.get(j, 0.0) + (1 - share) * w
        return row

    def merged(self, tok: str) -> dict[int, float]:
        """e(ab) = (e(a) + e(b)) / 2 down the new tokenizer's merge tree, old tokens at the leaves."""
        if tok not in self.memo:
            i = self.old_id(tok)
            if i is not None:
                self.memo[tok] = {i: 1.0}
            elif tok in self.makers:
                out: dict[int, float] = {}
                for part in self.makers[tok]:
                    for j, w in self.merged(part).items():
                        out[j] = out.get(j, 0.0) + w / 2
                self.memo[tok] = out
            else:  # no merge builds it (an alphabet character): its decomposition's mean
                self.memo[tok] = _mean(self.decompose(token_bytes(tok, self.new_style))) or {self.old.size: 1.0}
        return self.memo[tok]


def _combined(rule: _Rows, new: TokenizerDir, method: str, aux: AuxVectors, k: int) -> dict[str, dict[int, float]]:
    """Weights over old ids for each new token that has an auxiliary vector, from the anchors: shared tokens whose
    auxiliary vector was trained (seen often enough in the auxiliary corpus)."""
    if aux.vectors.shape[0] != new.size:
        raise ValueError(f"auxiliary vectors for {aux.vectors.shape[0]} tokens, the new tokenizer has {new.size}")
    anchors, old_ids, targets = [], [], []
    for i, tok in enumerate(new.tokens):
        if tok is None or tok in rule.new_added:
            continue
        j = rule.old_id(tok)
        if j is not None and aux.trained[i]:
            anchors.append(i)
            old_ids.append(j)
        elif j is None and aux.usable[i]:
            targets.append(i)
    if not anchors:
        raise UserError(f"--init {method}: no token of the new vocabulary is both in the old one and frequent in the "
                        "auxiliary corpus, so there is nothing to combine; give more target-language text or use mean")
    weights = combine(method, aux.vectors[targets], aux.vectors[anchors], k).tocsr()
    old_ids = np.asarray(old_ids)
    out = {}
    for r, i in enumerate(targets):
        lo, hi = weights.indptr[r], weights.indptr[r + 1]
        row: dict[int, float] = {}
        for j, w in zip(old_ids[weights.indices[lo:hi]], weights.data[lo:hi]):
            row[int(j)] = row.get(int(j), 0.0) + float(w)
        row = rule.blend(new.tokens[i], row)
        if row:
            out[new.tokens[i]] = row
    return out


def _mean(ids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for i in ids:
        out[i] = out.get(i, 0.0) + 1.0 / len(ids)
    return out


def _wmean(ids: list[int], old: TokenizerDir, how: str) -> dict[int, float]:
    w = [math.exp(-WMEAN_DECAY * k) * (WMEAN_SPACE if not token_bytes(old.tokens[i], how).strip() else 1.0)
         for k, i in enumerate(ids)]
    out: dict[int, float] = {}
    for i, wi in zip(ids, w):
        out[i] = out.get(i, 0.0) + wi / sum(w)
    return out


def read_mapping(path, old: TokenizerDir, new: TokenizerDir) -> dict[str, list[tuple[str, float]]]:
    """A JSON object {new token: {old token: weight, ...}} (trans-tokenization output); every token must exist."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"mapping {p}: cannot read it as JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"mapping {p}: expected an object {{new token: {{old token: weight}}}}")
    out = {}
    for tok, entry in data.items():
        if tok not in new.vocab:
            raise UserError(f"mapping {p}: {tok!r} is not a token of the new tokenizer")
        if not isinstance(entry, dict) or not entry:
            raise UserError(f"mapping {p}: {tok!r} must map to a non-empty object {{old token: weight}}")
        for o, w in entry.items():
            if o not in old.vocab:
                raise UserError(f"mapping {p}: {tok!r} -> {o!r} is not a token of the old tokenizer")
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise UserError(f"mapping {p}: {tok!r} -> {o!r} has weight {w!r}, expected a finite number >= 0")
        if not sum(entry.values()) > 0:
            raise UserError(f"mapping {p}: {tok!r} has weights that sum to 0, which would make its row all zeros")
        out[tok] = [(o, float(w)) for o, w in entry.items()]
    return out
