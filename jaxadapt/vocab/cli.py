"""`jaxadapt tokenizer ...` (train, extend, stats) and `jaxadapt vocab ...` (adapt, map): thin wrappers over
jaxadapt.vocab. Each command is a typed function (options as `Annotated` types, plain defaults), so a recipe stage
(`tokenizer_train`, `vocab_adapt`, ...) calls it as the CLI does."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from jaxadapt.errors import UserError
from jaxadapt.io.atomic import check_file_output, check_output
from jaxadapt.options import Overwrite
from jaxadapt.vocab.adapt import VOCAB_PAD

tokenizer_app = typer.Typer(no_args_is_help=True, add_completion=False,
                            help="Train, extend and measure tokenizers for a target language.")
vocab_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Give a model a new vocabulary (embedding initialisation).")

Corpus = Annotated[list[str], typer.Option("--corpus", help="A .jsonl (text field) or text file, dir, glob or URL "
                                                             "(gs://...), or debian:LANG; repeat for more.")]
MaxMb = Annotated[Optional[float], typer.Option("--max-mb", help="Read at most this many MB of text from each "
                                                                 "corpus.")]


def _texts(corpus: list[str], max_mb: float | None) -> list[str]:
    from jaxadapt.vocab.corpus import read_corpora

    return read_corpora(corpus, None if max_mb is None else int(max_mb * 2**20))


@tokenizer_app.command("train")
def train_cmd(
    *,
    corpus: Corpus,
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Size of the vocabulary, special and byte tokens "
                                                                 "included.")],
    kind: Annotated[str, typer.Option(help="bpe (byte-level), spm-bpe (▁ + byte fallback) or unigram.")] = "bpe",
    out: Annotated[str, typer.Option("--out", help="The tokenizer directory to write (a path or a gs:// URL).")],
    split_digits: Annotated[bool, typer.Option(help="Make every digit its own token.")] = True,
    special_token: Annotated[Optional[list[str]], typer.Option("--special-token", help="A special token (repeat); "
                                                                                       "default per kind.")] = None,
    max_mb: MaxMb = None,
    overwrite: Overwrite = False,
):
    """Train a new tokenizer from scratch on target-language text."""
    from jaxadapt.vocab.tokdir import write_tokenizer_dir
    from jaxadapt.vocab.train import train

    check_output(out, corpus, overwrite)
    tok, config = train(_texts(corpus, max_mb), vocab_size, kind, split_digits, special_token or None)
    origin = {"mode": "train", "kind": kind, "vocab_size": vocab_size, "split_digits": split_digits,
              "corpus": [str(c) for c in corpus]}
    write_tokenizer_dir(out, tok, origin, config=config)
    typer.echo(f"wrote {out} ({tok.size} tokens)")


@tokenizer_app.command("extend")
def extend_cmd(
    *,
    base: Annotated[str, typer.Option("--base", help="A model or tokenizer dir with tokenizer.json, or a hub id.")],
    corpus: Corpus,
    out: Annotated[str, typer.Option("--out", help="The tokenizer directory to write (a path or a gs:// URL).")],
    add: Annotated[Optional[int], typer.Option("--add", help="How many new tokens to learn and append.")] = None,
    merge_priority: Annotated[str, typer.Option(help="low: new merges after the old ones; high: before "
                                                     "them.")] = "low",
    replace: Annotated[bool, typer.Option("--replace", help="Make a stand-alone tokenizer of --vocab-size "
                                                            "tokens.")] = False,
    optimize: Annotated[Optional[float], typer.Option("--optimize", metavar="KEEP_FRACTION",
                                                      help="Keep this share of the old tokens (most used on the "
                                                           "corpus), refill with new ones.")] = None,
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size",
                                                      help="--replace: the new size; --optimize: the final size "
                                                           "(default: the base's).")] = None,
    protect: Annotated[Optional[list[str]], typer.Option("--protect",
                                                         help="Text of a language the new merges should leave alone "
                                                              "(e.g. a related language the model is not trained "
                                                              "on); repeat for more.")] = None,
    protect_weight: Annotated[float, typer.Option("--protect-weight",
                                                  help="How strongly --protect text vetoes a merge (1: a merge is "
                                                       "learned only if the target uses it more, per byte, than the "
                                                       "protected text).")] = 1.0,
    max_mb: MaxMb = None,
    overwrite: Overwrite = False,
):
    """Extend a tokenizer with target-language tokens, keeping every old id (or --replace / --optimize it)."""
    from jaxadapt.vocab.extend import extend
    from jaxadapt.vocab.optimize import optimize as optimize_vocab
    from jaxadapt.vocab.replace import replace as replace_vocab
    from jaxadapt.vocab.tokdir import read_tokenizer, write_tokenizer_dir

    if replace and optimize is not None:
        raise UserError("--replace and --optimize exclude each other")
    if replace and vocab_size is None:
        raise UserError("--replace needs --vocab-size (the size of the new vocabulary)")
    if not replace and optimize is None and add is None:
        raise UserError("--add N is required (or --replace / --optimize)")
    if protect and (replace or optimize is not None):
        raise UserError("--protect applies to extension only, not to --replace / --optimize")
    check_output(out, [base, *corpus, *(protect or ())], overwrite)
    base_tok = read_tokenizer(base)
    texts = _texts(corpus, max_mb)
    origin = {"base": str(base), "base_fingerprint": base_tok.fingerprint(), "base_vocab_size": base_tok.size,
              "corpus": [str(c) for c in corpus]}
    if replace:
        new = replace_vocab(base_tok, texts, vocab_size)
        origin.update(mode="replace", vocab_size=vocab_size)
    elif optimize is not None:
        new = optimize_vocab(base_tok, texts, optimize, vocab_size)
        origin.update(mode="optimize", keep_fraction=optimize, vocab_size=new.size)
    else:
        new = extend(base_tok, texts, add, merge_priority, _texts(protect, max_mb) if protect else [], protect_weight)
        origin.update(mode="extend", added=add, merge_priority=merge_priority)
        if protect:
            origin.update(protect=[str(p) for p in protect], protect_weight=protect_weight)
    write_tokenizer_dir(out, new, origin)
    typer.echo(f"wrote {out} ({base_tok.size} -> {new.size} tokens)")


@tokenizer_app.command("stats")
def stats_cmd(
    *,
    tokenizer: Annotated[list[str], typer.Option("--tokenizer", help="A tokenizer or model dir, or a hub id; repeat "
                                                                     "to compare.")],
    corpus: Corpus,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    json_out: Annotated[Optional[str], typer.Option("--json-out", help="Also write the JSON to this file (a path or "
                                                                       "a gs:// URL).")] = None,
    max_mb: MaxMb = None,
):
    """Characters/bytes per token, tokens per word and line, words split, byte-fallback rate per corpus."""
    from jaxadapt.vocab.corpus import read_corpus
    from jaxadapt.vocab.stats import corpus_stats, format_table
    from jaxadapt.vocab.tokdir import read_tokenizer

    if json_out is not None:
        check_file_output(json_out, "--json-out")
    toks = [(t, read_tokenizer(t)) for t in tokenizer]
    limit = None if max_mb is None else int(max_mb * 2**20)
    texts = [(str(c), read_corpus(c, limit)) for c in corpus]
    rows = [(name, cname, corpus_stats(tok, docs)) for name, tok in toks for cname, docs in texts]
    records = [{"tokenizer": t, "corpus": c, **s.as_dict()} for t, c, s in rows]
    typer.echo(json.dumps(records, indent=2) if as_json else format_table(rows))
    if json_out is not None:
        from jaxadapt.fs import atomic_file

        with atomic_file(json_out, encoding="utf-8") as fh:
            json.dump(records, fh, indent=2)


@vocab_app.command("adapt")
def adapt_cmd(
    *,
    model: Annotated[str, typer.Option("--model", help="An HF model dir or a hub id (with its tokenizer).")],
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="The new tokenizer (dir with tokenizer.json, or a hub "
                                                               "id).")],
    init: Annotated[str, typer.Option("--init", help="mean | wmean | merge | mean-all | random | mapping:FILE | "
                                                     "focus | knn | omp (these three need --aux-corpus)")] = "mean",
    out: Annotated[str, typer.Option("--out", help="The HF model dir to write (a path or a gs:// URL).")],
    old_tokenizer: Annotated[Optional[str], typer.Option("--old-tokenizer", help="The model's tokenizer, if not in "
                                                                                 "--model.")] = None,
    pad_to: Annotated[int, typer.Option("--pad-to", help="Pad the vocabulary to a multiple of this.")] = VOCAB_PAD,
    seed: Annotated[int, typer.Option(help="Seed of --init random and of the auxiliary fastText vectors.")] = 0,
    dtype: Annotated[Optional[str], typer.Option(help="Parameter dtype written (default: the model's).")] = None,
    aux_corpus: Annotated[Optional[list[str]], typer.Option(
        "--aux-corpus", help="--init focus/knn/omp: target-language text (as --corpus of tokenizer train) that "
                             "auxiliary fastText vectors of the new tokens learn from; repeat for more.")] = None,
    aux_max_mb: Annotated[Optional[float], typer.Option("--aux-max-mb", help="Read at most this many MB of each "
                                                                             "--aux-corpus.")] = None,
    aux_k: Annotated[int, typer.Option("--aux-k", help="--init knn/omp: anchor tokens combined per new "
                                                       "token.")] = 16,
    aux_mix: Annotated[float, typer.Option("--aux-mix", help="--init focus/knn/omp/mapping:FILE: share of the "
                                                             "combination or mapping in each row; the rest is the "
                                                             "token's wmean decomposition.")] = 1.0,
    overwrite: Overwrite = False,
):
    """Build embeddings (and an untied LM head) for a new tokenizer's vocabulary; old tokens keep their rows."""
    from jaxadapt.vocab.adapt import ADAPTATION_FILE, adapt

    aux_corpus = aux_corpus or []
    check_output(out, [model, tokenizer, old_tokenizer, *aux_corpus], overwrite)
    path = adapt(model, tokenizer, init, out, old_tokenizer=old_tokenizer, pad_to=pad_to, seed=seed, dtype=dtype,
                 aux_corpus=aux_corpus, aux_max_mb=aux_max_mb, aux_k=aux_k, aux_mix=aux_mix)
    record = json.loads((path / ADAPTATION_FILE).read_text())
    typer.echo(f"wrote {path} (vocab {record['old_vocab_size']} -> {record['new_vocab_size']}, padded to "
               f"{record['padded_vocab_size']}; rows: {record['counts']})")
    if record.get("mapping", {}).get("superseded_by_copy"):
        m = record["mapping"]
        typer.echo(f"{m['superseded_by_copy']} of the mapping's {m['entries']} entries name tokens the old vocabulary "
                   "has: their rows are copied from it, not mapped")


@vocab_app.command("map")
def map_cmd(
    *,
    source_tokenizer: Annotated[str, typer.Option("--source-tokenizer", help="The old tokenizer (the model's), which "
                                                                             "spells the source side.")],
    target_tokenizer: Annotated[str, typer.Option("--target-tokenizer", help="The new tokenizer, which spells the "
                                                                             "target side.")],
    parallel: Annotated[tuple[str, str], typer.Option("--parallel", metavar="SRC TGT",
                                                      help="Two line-aligned files, source language first: JSONL "
                                                           "with a 'text' field (as `data parallel` writes) or plain "
                                                           "text.")],
    out: Annotated[str, typer.Option("--out", help="The mapping JSON to write, for `vocab adapt --init "
                                                   "mapping:FILE`.")],
    aligner: Annotated[str, typer.Option(help="eflomal (Bayesian HMM + fertility) or fast_align.")] = "eflomal",
    iterations: Annotated[Optional[int], typer.Option(help="Alignment sweeps (default: eflomal's schedule, "
                                                           "~5000/sqrt(pairs); fast_align 5).")] = None,
    min_count: Annotated[float, typer.Option(help="Leave out new tokens aligned fewer times (vocab adapt then "
                                                  "initialises them as --init mean).")] = 2.0,
    min_prob: Annotated[float, typer.Option(help="Drop old tokens whose translation probability is below "
                                                 "this.")] = 0.01,
    max_sources: Annotated[int, typer.Option(help="Keep at most this many old tokens per new token.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of eflomal's sampler.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file at --out.")] = False,
):
    """Trans-tokenization: word-align parallel text and write, per new token, the old tokens it translates to."""
    from pathlib import Path

    from jaxadapt import fs
    from jaxadapt.vocab.transtok import map_parallel

    check_file_output(out, "--out")
    if fs.exists(out) and not overwrite:
        raise UserError(f"--out {out}: exists; pass --overwrite to replace it, or choose another path")
    if any(out == p or not fs.is_url(out) and Path(out).resolve() == Path(p).resolve() for p in parallel):
        raise UserError(f"--out {out}: is one of the --parallel files")
    stats = map_parallel(source_tokenizer, target_tokenizer, *parallel, out, aligner, iterations, min_count,
                         min_prob, max_sources, seed)
    typer.echo(f"wrote {out}: {stats['mapped_new_tokens']} of {stats['new_vocab']} new tokens mapped "
               f"({stats['mapped_share_of_target_tokens']:.1%} of the target text's tokens), "
               f"{stats['mean_sources_per_token']} old tokens each on average, from {stats['pairs']} pairs "
               f"({stats['links']} word links)")
