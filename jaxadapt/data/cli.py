"""`jaxadapt data ...`: fetch real corpora and measure them. Each command is a typed function (options as
`Annotated` types, plain defaults), so a recipe stage (`data_split`, `data_parallel`) calls it as the CLI does."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from jaxadapt.errors import UserError
from jaxadapt.options import Overwrite

data_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Corpora: fetch real text, count it.")


@data_app.command()
def fetch(
    what: Annotated[str, typer.Argument(help="Where the text comes from: 'debian' (documentation packages).")],
    lang: Annotated[str, typer.Option(help="Training text: nl, en, de or ru (LibreOffice help; Russian also man "
                                           "pages and fortunes). Evaluation text of other domains: nl-eval, "
                                           "en-eval, de-eval, ru-eval (Debian FAQ, man pages, New Maintainers' "
                                           "Guide).")],
    out: Annotated[str, typer.Option(help="Directory to write debian-LANG.jsonl into (a path or a gs:// URL).")],
):
    """Download real prose and write it as a JSONL corpus (text, source)."""
    if what != "debian":
        raise UserError(f"data fetch: unknown corpus {what!r}; available: debian")
    from jaxadapt import fs
    from jaxadapt.data.debian import fetch as fetch_debian

    if not fs.is_url(out):
        path, counts = fetch_debian(lang, out)
    else:  # built locally, then uploaded as one object
        import shutil
        import tempfile

        fs.check_reachable(out, "--out")
        with tempfile.TemporaryDirectory(prefix="jaxadapt-fetch-") as tmp:
            built, counts = fetch_debian(lang, tmp)
            path = f"{out.rstrip('/')}/{built.name}"
            with open(built, "rb") as src, fs.atomic_file(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
    for package, n in sorted(counts.items()):
        typer.echo(f"{package}: {n} documents")
    typer.echo(f"wrote {path}")


@data_app.command()
def split(
    src: Annotated[str, typer.Argument(
        help="A JSONL/text/parquet file or dir, or debian:LANG (the cached Debian corpus).")],
    out: Annotated[str, typer.Option(
        help="Directory to write train.jsonl, heldout.jsonl and split.json into (a path or a gs:// URL).")],
    heldout_fraction: Annotated[float, typer.Option(help="Share of documents held out, by the trainer's document "
                                                         "hash (the same split as "
                                                         "data.validation_fraction).")] = 0.03,
    max_heldout: Annotated[int, typer.Option(help="Keep at most this many held-out documents (0: all); the rest of "
                                                  "the split is dropped, not trained on.")] = 0,
    overwrite: Overwrite = False,
):
    """Split a corpus into training and held-out documents (for tokenizers, training and evaluation)."""
    from jaxadapt.data.split import split_corpus
    from jaxadapt.io.atomic import check_output

    check_output(out, [src], overwrite)
    counts = split_corpus(src, out, heldout_fraction, max_heldout)
    typer.echo(f"wrote {out}: {counts['train']} training and {counts['heldout']} held-out documents")


@data_app.command()
def stats(
    paths: Annotated[list[str], typer.Argument(help="Files, directories or globs; each is reported as one source.")],
    tokenizer: Annotated[Optional[str], typer.Option(help="Tokenizer or model dir, tokenizer.json, hub id, or "
                                                          "'smollm2'.")] = None,
    text_field: Annotated[str, typer.Option(help="Field of a JSONL/Parquet/HF record that holds the text.")] = "text",
    format: Annotated[str, typer.Option(help="auto, text, jsonl, parquet or hf.")] = "auto",
    doc_split: Annotated[str, typer.Option(help="Plain text: a document per file, blank_line block or line.")] = "file",
):
    """Print documents, bytes, words and tokens per source."""
    from jaxadapt.data.config import SourceConfig
    from jaxadapt.data.stats import corpus_stats

    tok = _tokenizer(tokenizer) if tokenizer else None
    cols = ["documents", "bytes", "words"] + (["tokens", "bytes/token"] if tok else [])
    typer.echo("\t".join(["source", *cols]))
    for path in paths:
        src = SourceConfig(name=path, paths=(path,), format=format, text_field=text_field, doc_split=doc_split)
        c = corpus_stats(src, tok)
        c["bytes/token"] = round(c["bytes"] / c["tokens"], 3) if c["tokens"] else 0
        typer.echo("\t".join([path, *(str(c[k]) for k in cols)]))
        notes = [f"{c[k]} {k.replace('_', ' ')}" for k in ("empty", "invalid_utf8") if c[k]]
        if notes:
            typer.echo(f"  skipped/replaced: {', '.join(notes)}", err=True)


def _tokenizer(spec: str) -> Any:
    """An HF fast tokenizer from a directory, a tokenizer.json file, a hub id, or 'smollm2' (the real one, cached)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from jaxadapt.io.hf import resolve_local

    if spec == "smollm2":
        from jaxadapt.assets import smollm2_dir

        spec = str(smollm2_dir())
    path = resolve_local(spec)
    if path.is_file() and path.suffix == ".json":
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    if not path.is_dir():
        raise UserError(f"tokenizer {spec!r}: expected a directory, a tokenizer.json, a hub id or 'smollm2'")
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load a tokenizer from {path}: {e}") from None


@data_app.command()
def parallel(
    what: Annotated[str, typer.Argument(help="Where the text comes from: 'debian' (LibreOffice help, the same pages "
                                             "in several languages).")],
    langs: Annotated[str, typer.Option(help="SOURCE,TARGET: two of en, nl, de, ru (e.g. en,nl: the old model's "
                                            "language first).")],
    out: Annotated[str, typer.Option(help="Directory to write debian-SRC-TGT.SRC.jsonl, debian-SRC-TGT.TGT.jsonl "
                                          "(line-aligned) and debian-SRC-TGT.json (counts, validation) into (a path "
                                          "or a gs:// URL).")],
    exclude: Annotated[Optional[list[str]], typer.Option(
        help="Documents to leave out (repeatable): a page whose text, in either language, is one of this file's "
             "documents (JSONL `text`, e.g. the heldout.jsonl of `data split debian:nl`) is not paired, so a mapping "
             "built from the pairs never saw the text a model is scored on.")] = None,
    overwrite: Overwrite = False,
):
    """Sentence-aligned parallel text: pages paired by path, paragraphs and sentences aligned."""
    if what != "debian":
        raise UserError(f"data parallel: unknown corpus {what!r}; available: debian")
    pair = [x.strip() for x in langs.split(",")]
    if len(pair) != 2 or not all(pair):
        raise UserError(f"--langs {langs!r}: expected two languages, SOURCE,TARGET (e.g. en,nl)")
    from jaxadapt.data.parallel import write_parallel
    from jaxadapt.io.atomic import check_output

    exclude = exclude or []
    check_output(out, exclude, overwrite)
    path, stats = write_parallel(pair[0], pair[1], out, exclude)
    pages = stats["pages"]
    if exclude:
        typer.echo(f"left out {len(pages['excluded'])} held-out pages")
    typer.echo(f"{pages['kept']} of {pages['paired_by_path']} page pairs aligned ({len(pages['dropped'])} dropped: "
               f"paragraphs reordered or rewritten), {stats['segments']} segments, "
               f"{stats['sentence_segments']} of them sentences cut from paragraphs")
    typer.echo(f"wrote {path}")
