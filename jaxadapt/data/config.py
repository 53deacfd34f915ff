"""The data configuration: plain frozen dataclasses, so a run's YAML config can embed them verbatim."""

from __future__ import annotations

from dataclasses import dataclass

from jaxadapt.errors import UserError

FORMATS = ("auto", "text", "jsonl", "parquet", "hf")
DOC_SPLITS = ("file", "blank_line", "line")
TASKS = ("pretrain", "sft", "dpo")
POLICIES = ("auto", "always", "never")


@dataclass(frozen=True)
class SourceConfig:
    """One named corpus of a mixture.

    paths: files, directories (read recursively), globs (`**` allowed), HF datasets saved with `save_to_disk`,
      URLs (`gs://bucket/corpus/*.jsonl.gz`, any fsspec protocol), files of a hub dataset
      (`hf://datasets/ORG/NAME[@REVISION]/PATTERN`), or, with format "hf", a local dataset dir or a hub dataset id
      (`ORG/NAME`, read through the `hf_*` keys below).
    format: "auto" picks by file name: *.jsonl[.gz|.zst] -> jsonl, *.parquet -> parquet, a saved HF dataset
      dir -> hf, anything else -> text.
    doc_split: how plain-text files are cut into documents: one per file, per blank-line block, or per line.
    text_field: the record field holding a document (jsonl, parquet, hf) for task "pretrain".
    weight: relative share of the mixture's training examples (normalised over the sources).
    hf_split: the split to read from a hub dataset or a saved dataset dict.
    hf_name: the hub dataset's configuration, as its card declares them (CulturaX "nl", FineWeb-2 "nld_Latn");
      optional when the card has one configuration or a default.
    hf_data_files: globs inside the hub repo to read instead of a configuration's files ("nl/*.parquet").
    hf_revision: branch, tag or commit of the hub dataset (default main); a run reads one commit throughout.
    hf_streaming: read the hub files by ranged requests instead of downloading them to the hub cache first
      (offline, the cache is read either way).
    """

    name: str
    paths: tuple[str, ...]
    format: str = "auto"
    doc_split: str = "file"
    text_field: str = "text"
    weight: float = 1.0
    hf_split: str = "train"
    hf_name: str | None = None
    hf_data_files: tuple[str, ...] = ()
    hf_revision: str | None = None
    hf_streaming: bool = False

    def __post_init__(self):
        for key in ("paths", "hf_data_files"):
            if isinstance(getattr(self, key), str):
                object.__setattr__(self, key, (getattr(self, key),))
        if not self.name:
            raise UserError("data source: name must not be empty")
        if not self.paths:
            raise UserError(f"data source {self.name!r}: paths must name at least one file, dir or glob")
        _choice(f"source {self.name!r}: format", self.format, FORMATS)
        _choice(f"source {self.name!r}: doc_split", self.doc_split, DOC_SPLITS)
        if not self.weight > 0:
            raise UserError(f"data source {self.name!r}: weight must be > 0, got {self.weight}")


@dataclass(frozen=True)
class DataConfig:
    """Everything that decides which token batches a run sees (and so belongs in its checkpoint fingerprint).

    task: "pretrain" (documents, concatenate-and-split packing), "sft" (chat records, first-fit packing, loss on
      assistant tokens only) or "dpo" (prompt/chosen/rejected pairs, one pair per row).
    bos / eos: "auto" follows the tokenizer (BOS if it adds one itself; EOS whenever it has one), "always"
      requires the token, "never" leaves documents bare. Chat tasks take both from the chat template instead.
    validation_fraction: share of each source's documents held out, chosen by a hash of the document, so the
      split is the same in every run and on every host; validation_max_docs caps what evaluation reads (0: no cap).
    shuffle_buffer: documents shuffled together (a window; the corpus itself is streamed, never loaded).
    num_workers: grain worker processes for read+tokenize+pack (0: a background thread in this process).
    prefetch: batches buffered ahead of the trainer.
    tokenize_batch: documents per call into the (Rust, multi-threaded) tokenizer.
    packing_bins: rows first-fit packing fills at once (SFT): more bins, less padding.
    host_sharding: how processes split the data. "records": process i reads records i, i+n, ... (each host
      tokenizes only its share; the batches differ from a single-process run). "rows": every host reads and packs
      the whole stream and keeps its block of each global batch, so any process count trains on exactly the
      batches of one process (reproducible; costs n-fold tokenization, cheap next to training).
    """

    sources: tuple[SourceConfig, ...] = ()
    task: str = "pretrain"
    seq_len: int = 1024
    batch_size: int = 8
    bos: str = "auto"
    eos: str = "auto"
    seed: int = 0
    validation_fraction: float = 0.01
    validation_max_docs: int = 1000
    shuffle_buffer: int = 10_000
    num_workers: int = 0
    prefetch: int = 2
    tokenize_batch: int = 256
    packing_bins: int = 64
    host_sharding: str = "records"

    def __post_init__(self):
        sources = tuple(SourceConfig(**s) if isinstance(s, dict) else s for s in self.sources)
        object.__setattr__(self, "sources", sources)
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise UserError(f"data: source names must be unique, got {names}")
        _choice("data: task", self.task, TASKS)
        _choice("data: bos", self.bos, POLICIES)
        _choice("data: eos", self.eos, POLICIES)
        _choice("data: host_sharding", self.host_sharding, ("records", "rows"))
        if not 0.0 <= self.validation_fraction < 1.0:
            raise UserError(f"data: validation_fraction must be in [0, 1), got {self.validation_fraction}")
        for key in ("seq_len", "batch_size", "shuffle_buffer", "tokenize_batch", "packing_bins"):
            if getattr(self, key) < 1:
                raise UserError(f"data: {key} must be >= 1, got {getattr(self, key)}")
        for key in ("num_workers", "prefetch", "validation_max_docs"):
            if getattr(self, key) < 0:
                raise UserError(f"data: {key} must be >= 0, got {getattr(self, key)}")


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"data {what} must be one of {', '.join(allowed)}; got {value!r}")
