"""`jaxadapt tokenizer ...` (train, extend, stats) and `jaxadapt vocab adapt`: thin wrappers over jaxadapt.vocab."""

from __future__ import annotations

import json

import typer

from jaxadapt.errors import UserError
from jaxadapt.io.atomic import check_file_output, check_output
from jaxadapt.options import OVERWRITE

tokenizer_app = typer.Typer(no_args_is_help=True, add_completion=False,
                            help="Train, extend and measure tokenizers for a target language.")
vocab_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Give a model a new vocabulary (embedding initialisation).")

CORPUS = typer.Option(..., "--corpus", help="A .jsonl (text field) or text file, dir, glob or URL (gs://...), or "
                                            "debian:LANG; repeat for more.")
MAX_MB = typer.Option(None, "--max-mb", help="Read at most this many MB of text from each corpus.")


def _texts(corpus: list[str], max_mb: float | None) -> list[str]:
    from jaxadapt.vocab.corpus import read_corpora

    return read_corpora(corpus, None if max_mb is None else int(max_mb * 2**20))


@tokenizer_app.command("train")
def train_cmd(
    corpus: list[str] = CORPUS,
    vocab_size: int = typer.Option(..., "--vocab-size",
                                   help="Size of the vocabulary, special and byte tokens included."),
    kind: str = typer.Option("bpe", help="bpe (byte-level), spm-bpe (▁ + byte fallback) or unigram."),
    out: str = typer.Option(..., "--out", help="The tokenizer directory to write (a path or a gs:// URL)."),
    split_digits: bool = typer.Option(True, help="Make every digit its own token."),
    special_token: list[str] | None = typer.Option(None, "--special-token",
                                                      help="A special token (repeat); default per kind."),
    max_mb: float | None = MAX_MB,
    overwrite: bool = OVERWRITE,
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
    base: str = typer.Option(..., "--base", help="A model or tokenizer dir with tokenizer.json, or a hub id."),
    corpus: list[str] = CORPUS,
    out: str = typer.Option(..., "--out", help="The tokenizer directory to write (a path or a gs:// URL)."),
    add: int | None = typer.Option(None, "--add", help="How many new tokens to learn and append."),
    merge_priority: str = typer.Option("low", help="low: new merges after the old ones; high: before them."),
    replace: bool = typer.Option(False, "--replace", help="Make a stand-alone tokenizer of --vocab-size tokens."),
    optimize: float | None = typer.Option(None, "--optimize", metavar="KEEP_FRACTION",
                                             help="Keep this share of the old tokens (most used on the corpus), "
                                                  "refill with new ones."),
    vocab_size: int | None = typer.Option(None, "--vocab-size",
                                             help="--replace: the new size; --optimize: the final size "
                                                  "(default: the base's)."),
    protect: list[str] = typer.Option([], "--protect",
                                       help="Text of a language the new merges should leave alone (e.g. a related "
                                            "language the model is not trained on); repeat for more."),
    protect_weight: float = typer.Option(1.0, "--protect-weight",
                                         help="How strongly --protect text vetoes a merge (1: a merge is learned "
                                              "only if the target uses it more, per byte, than the protected text)."),
    max_mb: float | None = MAX_MB,
    overwrite: bool = OVERWRITE,
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
    check_output(out, [base, *corpus, *protect], overwrite)
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
    tokenizer: list[str] = typer.Option(..., "--tokenizer", help="A tokenizer or model dir, or a hub id; repeat to "
                                                                "compare."),
    corpus: list[str] = CORPUS,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    json_out: str | None = typer.Option(None, "--json-out", help="Also write the JSON to this file (a path or a "
                                                                "gs:// URL)."),
    max_mb: float | None = MAX_MB,
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
    model: str = typer.Option(..., "--model", help="An HF model dir or a hub id (with its tokenizer)."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="The new tokenizer (dir with tokenizer.json, or a hub id)."),
    init: str = typer.Option("mean", "--init", help="mean | wmean | merge | mean-all | random | mapping:FILE"),
    out: str = typer.Option(..., "--out", help="The HF model dir to write (a path or a gs:// URL)."),
    old_tokenizer: str | None = typer.Option(None, "--old-tokenizer", help="The model's tokenizer, if not in --model."),
    pad_to: int = typer.Option(128, "--pad-to", help="Pad the vocabulary to a multiple of this."),
    seed: int = typer.Option(0, help="Seed of --init random."),
    dtype: str | None = typer.Option(None, help="Parameter dtype written (default: the model's)."),
    overwrite: bool = OVERWRITE,
):
    """Build embeddings (and an untied LM head) for a new tokenizer's vocabulary; old tokens keep their rows."""
    from jaxadapt.vocab.adapt import ADAPTATION_FILE, adapt

    check_output(out, [model, tokenizer, old_tokenizer], overwrite)
    path = adapt(model, tokenizer, init, out, old_tokenizer=old_tokenizer, pad_to=pad_to, seed=seed, dtype=dtype)
    record = json.loads((path / ADAPTATION_FILE).read_text())
    typer.echo(f"wrote {path} (vocab {record['old_vocab_size']} -> {record['new_vocab_size']}, padded to "
               f"{record['padded_vocab_size']}; rows: {record['counts']})")
