"""Word alignment of a sentence-aligned corpus, both directions symmetrized (grow-diag-final-and).

The aligner is SIL's Thot (PyPI `sil-thot`, LGPL-3.0, maintained; binary wheels for CPython 3.10-3.14 on x86-64
Linux, macOS and Windows, no compiler needed). It ships eflomal (Östling & Tiedemann 2016: Bayesian HMM with
fertility, Gibbs-sampled; the default, as the more accurate) and fast_align (Dyer et al. 2013, the aligner of the
Trans-Tokenization paper). The PyPI `eflomal` package would need a C compiler at install time, builds with
-march=native and is GPL-3.0; simalign / awesome-align need a multilingual BERT from a model hub; fast_align itself
is not on PyPI. The alignments used are those of the last training sweep (the corpus is aligned transductively), so
no separate decoding pass runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxadapt.errors import UserError

ALIGNERS = ("eflomal", "fast_align")
FAST_ALIGN_ITERATIONS = 5  # fast_align's own default (-I 5)
MAX_WORDS = 1024  # Thot's models skip longer sentences


def align_words(src: Sequence[Sequence[str]], tgt: Sequence[Sequence[str]], aligner: str = "eflomal",
                iterations: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Per sentence pair, the links [k, 2] (source word index, target word index) between `src[i]` and `tgt[i]`.

    iterations: eflomal's sweeps in its last (fertility) stage, a quarter of that in each earlier stage (default:
    eflomal's own schedule, about 5000/sqrt(sentences)); fast_align's EM iterations (default 5)."""
    check_options(aligner, iterations)
    try:
        import thot.alignment as ta
    except ImportError:
        raise UserError("word alignment needs the package sil-thot: pip install 'sil-thot>=3.5.3' (PyPI has wheels "
                        "for x86-64 Linux, macOS and Windows; elsewhere pip builds it from source)") from None
    if len(src) != len(tgt):
        raise ValueError(f"{len(src)} source and {len(tgt)} target sentences")
    models = []
    for a, b in ((src, tgt), (tgt, src)):
        model = _model(ta, aligner, iterations, seed)
        model.emit_training_alignments = True
        for x, y in zip(a, b):
            model.add_sentence_pair(list(x[:MAX_WORDS]), list(y[:MAX_WORDS]), 1)
        model.start_training()
        sweeps = model.scheduled_iterations if aligner == "eflomal" else (iterations or FAST_ALIGN_ITERATIONS)
        for _ in range(sweeps):
            model.train()
        model.end_training()
        models.append(model)
    both = ta.SymmetrizedAlignmentModel(*models)
    both.heuristic = ta.SymmetrizationHeuristic.GROW_DIAG_FINAL_AND
    out = []
    for n in range(len(src)):
        matrix = both.get_training_alignment(n)[1].to_numpy()
        out.append(np.argwhere(matrix).astype(np.int32) if matrix.size else np.zeros((0, 2), np.int32))
    return out


def check_options(aligner: str, iterations: int | None) -> None:
    if aligner not in ALIGNERS:
        raise UserError(f"--aligner {aligner!r}: expected one of {', '.join(ALIGNERS)}")
    if iterations is not None and iterations < 1:
        raise UserError(f"--iterations {iterations}: expected a positive number")


def _model(ta, aligner: str, iterations: int | None, seed: int):
    if aligner == "fast_align":
        model = ta.FastAlignModel()
        model.variational_bayes = True  # fast_align's -v: a sparse Dirichlet prior on translation probabilities
        return model
    model = ta.EflomalAlignmentModel()
    model.seed = seed
    model.deterministic = True  # the same corpus and seed give the same alignment
    if iterations is not None:
        model.set_iterations(max(1, iterations // 4), max(1, iterations // 4), iterations)
    return model
