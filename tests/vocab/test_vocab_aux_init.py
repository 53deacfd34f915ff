"""The initialisations through auxiliary vectors (FOCUS, KNN, OMP; METHODS.md §2): the combination rules on vectors
whose answer is known, the transform on a real replaced vocabulary (shapes, exact copies, determinism across
processes), and the real SmolLM2 predicting held-out Dutch far better with them than with random rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from vocabhelpers import bits_per_byte

from jaxadapt.cli import main
from jaxadapt.io.hf import load_pretrained
from jaxadapt.vocab import adapt, build_transform, read_tokenizer, replace, write_tokenizer_dir
from jaxadapt.vocab.anchors import knn_weights, omp_weights, sparsemax
from jaxadapt.vocab.auxvec import train_aux
from jaxadapt.vocab.surface import BYTE_LEVEL, token_bytes
from jaxadapt.vocab.transform import AUX_METHODS

AUX_BYTES = 400_000  # Dutch text the auxiliary vectors learn from in these tests (~5 s of fastText)


def test_sparsemax_projects_onto_the_simplex():
    p = sparsemax(np.array([[0.9, 0.85, 0.1, -0.5], [1.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3]]))
    np.testing.assert_allclose(p, [[0.525, 0.475, 0, 0], [1, 0, 0, 0], [0.25] * 4], atol=1e-12)


def test_omp_recovers_a_sparse_combination():
    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(50, 20)) * rng.uniform(0.5, 3, size=(50, 1))  # OMP works on their directions
    unit = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    w = omp_weights((0.6 * unit[5] + 0.2 * unit[7])[None], anchors, k=2).toarray()[0]
    np.testing.assert_allclose(w[[5, 7]], [0.75, 0.25], atol=1e-9)  # least squares 0.6, 0.2, scaled to sum to 1
    assert np.count_nonzero(w) == 2
    w = omp_weights((0.6 * unit[5] + 0.2 * unit[7])[None], anchors, k=4).toarray()[0]
    np.testing.assert_allclose(w[[5, 7]], [0.75, 0.25], atol=1e-9)  # further picks get (numerically) nothing


def test_knn_weighs_the_nearest_by_similarity():
    anchors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    w = knn_weights(np.array([[2.0, 0.0]]), anchors, k=2).toarray()[0]
    np.testing.assert_allclose(w, [1 / (1 + 2**-0.5), 0, 2**-0.5 / (1 + 2**-0.5), 0], atol=1e-12)


@pytest.fixture(scope="module")
def replaced(smollm2_tok_dir, dutch, tmp_path_factory):
    """SmolLM2's tokenizer replaced by an 8K Dutch BPE, and auxiliary vectors trained on Dutch text for it."""
    base = read_tokenizer(smollm2_tok_dir)
    new = replace(base, dutch[0], 8000)
    origin = {"mode": "replace", "base": str(smollm2_tok_dir), "base_fingerprint": base.fingerprint()}
    path = write_tokenizer_dir(tmp_path_factory.mktemp("nl8k"), new, origin)
    new = read_tokenizer(path)
    aux_docs, size = [], 0
    for d in dutch[0]:
        aux_docs.append(d)
        size += len(d.encode())
        if size >= AUX_BYTES:
            break
    corpus = tmp_path_factory.mktemp("aux") / "aux.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in aux_docs), encoding="utf-8")
    return base, new, path, corpus, train_aux(new, aux_docs, seed=0)


@pytest.mark.parametrize("method", AUX_METHODS)
def test_transform_shapes_copies_and_anchors(method, replaced):
    old, new, _, _, aux = replaced
    t = build_transform(old, new, method, aux=aux)
    assert t.matrix.shape == (new.size, old.size + 1) and len(t.kinds) == new.size
    counts = t.counts()
    assert counts[method] > 0.5 * new.size and counts["copy"] > 500, counts
    rows = np.random.default_rng(1).normal(size=(old.size, 8)).astype(np.float32)
    out = t.apply(rows)
    assert out.shape == (new.size, 8) and out.dtype == np.float32
    copied = np.flatnonzero(t.copy_from >= 0)
    assert np.array_equal(out[copied], rows[t.copy_from[copied]]), "shared tokens copy their old row bit-exactly"
    for i in copied[::50]:
        assert token_bytes(new.tokens[i], BYTE_LEVEL) == token_bytes(old.tokens[t.copy_from[i]], BYTE_LEVEL)
    mine = np.array([k == method for k in t.kinds])
    part = t.matrix[np.flatnonzero(mine)]
    assert set(np.unique(part.indices)) <= set(t.copy_from[copied]), "combinations of shared tokens only"
    np.testing.assert_allclose(part.sum(axis=1), 1.0, atol=1e-9)
    if method != "omp":
        assert part.data.min() > 0
    again = build_transform(old, new, method, aux=aux)
    assert (again.matrix != t.matrix).nnz == 0 and again.kinds == t.kinds


def test_aux_vectors_are_the_same_in_another_process(replaced, tmp_path):
    """Same corpus and seed -> the same fastText vectors, also under another hash seed (gensim, one thread)."""
    _, _, path, corpus, aux = replaced
    script = (f"import json, numpy as np\nfrom jaxadapt.vocab import read_tokenizer, read_corpus\n"
              f"from jaxadapt.vocab.auxvec import train_aux\n"
              f"a = train_aux(read_tokenizer({str(path)!r}), read_corpus({str(corpus)!r}), seed=0)\n"
              f"np.save({str(tmp_path / 'v.npy')!r}, a.vectors)\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    assert np.array_equal(np.load(tmp_path / "v.npy"), aux.vectors)
    assert aux.trained.sum() > 1000


@pytest.mark.slow  # ~40 s of CPU: fastText three times, four 28K-row models written and loaded
def test_aux_inits_beat_random_on_dutch(smollm2_tok_dir, replaced, dutch, tmp_path, capsys):
    """Step 0 on held-out Dutch text with the real SmolLM2 and the replaced vocabulary: each init far below random."""
    _, new, path, corpus, _ = replaced
    out = tmp_path / "focus"
    assert main(["vocab", "adapt", "--model", str(smollm2_tok_dir), "--tokenizer", str(path), "--init", "focus",
                 "--aux-corpus", str(corpus), "--out", str(out)]) == 0
    record = json.loads((out / "adaptation.json").read_text())
    assert record["method"] == "focus" and record["aux"]["trained_vectors"] > 1000 and record["counts"]["focus"] > 0
    texts = [d[:600] for d in dutch[1][::75]]
    bpb = {"focus": bits_per_byte(load_pretrained(out), new.tokenizer, texts, start_id=0)}
    for init in ("knn", "omp", "random"):
        adapt(smollm2_tok_dir, path, init, tmp_path / init, aux_corpus=[str(corpus)] if init != "random" else None)
        bpb[init] = bits_per_byte(load_pretrained(tmp_path / init), new.tokenizer, texts, start_id=0)
    with capsys.disabled():
        print(f"\nSmolLM2, vocabulary replaced by an 8K Dutch BPE, Dutch bits/byte before training: {bpb}")
    for init in ("focus", "knn", "omp"):
        assert bpb[init] < 0.7 * bpb["random"], bpb


def test_aux_options_fail_before_any_work(smollm2_tok_dir, replaced, tmp_path, capsys):
    _, _, path, corpus, _ = replaced
    out = tmp_path / "out"
    argv = ["vocab", "adapt", "--model", str(smollm2_tok_dir), "--tokenizer", str(path), "--out", str(out)]
    for extra, phrase in ((["--init", "focus"], "--init focus needs --aux-corpus"),
                          (["--init", "mean", "--aux-corpus", str(corpus)], "used by --init focus/knn/omp only"),
                          (["--init", "omp", "--aux-corpus", str(corpus), "--aux-mix", "1.5"], "--aux-mix 1.5"),
                          (["--init", "wmean", "--aux-mix", "0.5"], "--init wmean has nothing to blend"),
                          (["--init", "knn", "--aux-corpus", str(tmp_path / "none.jsonl")], "none.jsonl")):
        assert main(argv + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and phrase in err, err
        assert not out.exists() and not list(tmp_path.glob(".out*"))
