"""Vocabulary adaptation: train, extend and measure tokenizers; give a model a new vocabulary (METHODS.md §1-2)."""

from jaxadapt.vocab.adapt import adapt
from jaxadapt.vocab.corpus import read_corpora, read_corpus
from jaxadapt.vocab.extend import extend
from jaxadapt.vocab.optimize import optimize
from jaxadapt.vocab.replace import replace
from jaxadapt.vocab.stats import Stats, corpus_stats
from jaxadapt.vocab.tokdir import TokenizerDir, read_tokenizer, write_tokenizer_dir
from jaxadapt.vocab.train import train
from jaxadapt.vocab.transform import Transform, build_transform

__all__ = [
    "Stats", "TokenizerDir", "Transform", "adapt", "build_transform", "corpus_stats", "extend",
    "optimize", "read_corpora", "read_corpus", "read_tokenizer", "replace", "train", "write_tokenizer_dir",
]
