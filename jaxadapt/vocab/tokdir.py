"""Tokenizer directories: read a base's tokenizer.json, write a new tokenizer dir that transformers loads.

We edit tokenizer.json as JSON (vocab, merges, added tokens) instead of going through transformers' classes: those
rebuild pipelines from class defaults, while an extension must keep the base's normaliser, pre-tokeniser, decoder,
post-processor and special tokens exactly as they were.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer

from jaxadapt import fs
from jaxadapt.errors import UserError
from jaxadapt.io.atomic import atomic_dir

# Files besides tokenizer.json that carry the special-token roles and the chat template.
SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json")
ORIGIN_FILE = "jaxadapt_tokenizer.json"  # how a tokenizer was made, and from which base vocabulary
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


class TokenizerError(UserError):
    """A tokenizer that is missing, unreadable or of a kind jaxadapt cannot work with."""


@dataclass
class TokenizerDir:
    """A parsed tokenizer.json and the directory whose config and chat template go with it (None: built here)."""

    spec: dict
    source: Path | None = None

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_str(json.dumps(self.spec))

    @property
    def model(self) -> dict:
        return self.spec["model"]

    @cached_property
    def vocab(self) -> dict[str, int]:
        """Every token -> id, model vocabulary and added tokens, as the tokenizers library numbers them (it may
        renumber added tokens whose tokenizer.json ids do not follow the model's vocabulary)."""
        return self.tokenizer.get_vocab(with_added_tokens=True)

    @cached_property
    def size(self) -> int:
        """One past the largest id: the number of embedding rows this tokenizer needs."""
        return max(self.vocab.values()) + 1

    @cached_property
    def tokens(self) -> list[str | None]:
        """id -> token (None for an id no token has)."""
        out: list[str | None] = [None] * self.size
        for tok, i in self.vocab.items():
            out[i] = tok
        return out

    @property
    def added(self) -> list[dict]:
        return list(self.spec.get("added_tokens") or [])

    @property
    def merges(self) -> list[tuple[str, str]]:
        return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in self.model.get("merges", [])]

    def fingerprint(self) -> str:
        """Identifies a vocabulary (tokens and ids), however its tokenizer.json happens to be formatted."""
        return hashlib.sha256(json.dumps(sorted(self.vocab.items()), ensure_ascii=False).encode()).hexdigest()

    def copy_spec(self) -> dict:
        return copy.deepcopy(self.spec)


def read_tokenizer(path) -> TokenizerDir:
    """A tokenizer dir (or model dir, or a hub id's snapshot) holding tokenizer.json, or a tokenizer.json file;
    either may be a URL (gs://...), of which only the tokenizer files are copied, never a model's weights."""
    from jaxadapt.io.hf import resolve_local

    url = fs.is_url(str(path))
    p = resolve_local(path, (*SIDE_FILES, ORIGIN_FILE))
    if not p.exists():
        raise TokenizerError(f"{path if url else p}: no such tokenizer file or directory")
    file = p if p.is_file() else p / "tokenizer.json"
    if not file.exists():
        raise TokenizerError(
            f"{path if url else p}: no tokenizer.json (jaxadapt reads fast tokenizers only; a slow tokenizer.model or "
            "vocab.json can be converted by loading it with transformers.AutoTokenizer and calling save_pretrained)")
    try:  # parse it now: a bad file is the user's error, not a crash later
        tok = TokenizerDir(json.loads(file.read_text(encoding="utf-8")), file.parent)
        empty = not tok.vocab
    except Exception as e:  # noqa: BLE001 (JSON, encoding, or the tokenizers library's plain Exception)
        raise TokenizerError(f"{file}: not a valid tokenizer.json ({str(e)[:200]})") from None
    if empty:
        raise TokenizerError(f"{file}: tokenizer.json has an empty vocabulary")
    return tok


def write_tokenizer_dir(out, tok: TokenizerDir, origin: dict, config: dict | None = None) -> Path:
    """Write tok (tokenizer.json, its source's config and chat template, or `config`) and ORIGIN_FILE to `out`.

    All or nothing: the dir is built aside, checked to load in transformers with exactly tok's vocabulary, then
    renamed into place.
    """
    with atomic_dir(out) as tmp:
        (tmp / "tokenizer.json").write_text(json.dumps(tok.spec, ensure_ascii=False, indent=1), encoding="utf-8")
        if config is not None:
            (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
        elif tok.source is not None:
            for name in SIDE_FILES:
                if (tok.source / name).exists():
                    shutil.copy2(tok.source / name, tmp / name)
            _renumber_config(tmp / "tokenizer_config.json", tok)
        (tmp / ORIGIN_FILE).write_text(json.dumps(origin, indent=2, ensure_ascii=False))
        _check_loads(tmp, tok)
    return fs.path(out)


def read_origin(path) -> dict | None:
    p = Path(path)
    f = (p.parent if p.is_file() else p) / ORIGIN_FILE
    return json.loads(f.read_text()) if f.exists() else None


def _renumber_config(path: Path, tok: TokenizerDir) -> None:
    """tokenizer_config.json may list added tokens by id (transformers 4); rewrite that list for the new ids."""
    if not path.exists():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in cfg:
        keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        cfg["added_tokens_decoder"] = {str(t["id"]): {k: t[k] for k in keys if k in t} for t in tok.added}
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")


def _check_loads(d: Path, tok: TokenizerDir) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(d))
    got = hf.get_vocab()
    if got != tok.vocab:
        wrong = sorted(set(got.items()) ^ set(tok.vocab.items()), key=lambda kv: kv[1])[:5]
        raise RuntimeError(f"transformers reads a different vocabulary from the tokenizer written to {d}: {wrong}")
