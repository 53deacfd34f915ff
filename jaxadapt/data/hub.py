"""Hub datasets as users name them: a repo id with a configuration, data files, a split and a revision.

Why not `datasets.load_dataset`: offline it ignores the hub cache that `hf download` fills, and a streamed dataset
resumes only by re-reading from its start. Resolving a configuration to its files here makes a hub dataset the same
Parquet / JSONL file list as a local corpus, so it resumes by row index and byte offset like one. Its files are read
from the hub cache (downloaded first, or already there offline) or, streamed, as `hf://` URLs by ranged reads.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from urllib.parse import quote

import yaml

from jaxadapt.errors import UserError, first_line

_URL = re.compile(r"hf://datasets/(?P<repo>[\w.-]+/[\w.-]+?)(?:@(?P<rev>[^/]+))?/(?P<pattern>.+)")


@dataclass(frozen=True)
class HubFiles:
    """A dataset's files at one commit: local paths in the hub cache, or `hf://` URLs when streamed."""

    repo: str
    commit: str
    paths: tuple[str, ...]


def parse_url(url: str) -> tuple[str, str | None, str]:
    """`hf://datasets/ORG/NAME[@REV]/PATTERN` -> (repo, revision or None, pattern inside the repo)."""
    m = _URL.fullmatch(url)
    if not m:
        raise UserError(f"{url}: expected hf://datasets/ORG/NAME[@REVISION]/FILES (a path or glob inside the repo)")
    return m["repo"], m["rev"], m["pattern"]


def resolve(repo: str, *, what: str, name: str | None = None, split: str = "train",
            data_files: tuple[str, ...] = (), revision: str | None = None, streaming: bool = False) -> HubFiles:
    """The files of `repo`'s configuration `name` (or of `data_files` patterns) for `split`, at one commit.

    Offline (HF_HUB_OFFLINE) the hub cache is the only source, streamed or not: its files must be there.
    """
    import huggingface_hub.constants

    revision = revision or "main"
    if streaming and not huggingface_hub.constants.HF_HUB_OFFLINE:
        return _streamed(repo, what=what, name=name, split=split, data_files=data_files, revision=revision)
    where = f"{what}: hub dataset {repo}@{revision}"
    snap = _download(repo, revision, ["README.md"] if not data_files else [], where)
    patterns = list(data_files) or _card_patterns(_card(os.path.join(snap, "README.md")), repo, name, split, what)
    _download(repo, os.path.basename(snap), patterns, where)
    found = sorted({p for pattern in patterns for p in glob.glob(os.path.join(snap, pattern), recursive=True)
                    if os.path.isfile(p)})
    if not found:
        offline = " in the hub cache (offline: fetch them first with `hf download --repo-type dataset`)" \
            if huggingface_hub.constants.HF_HUB_OFFLINE else ""
        raise UserError(f"{where}: no files match {', '.join(patterns)}{offline}")
    return HubFiles(repo, os.path.basename(snap), tuple(found))


def _download(repo: str, revision: str, patterns: list[str], where: str) -> str:
    """The snapshot dir of `repo` at `revision` with the files matching `patterns` in it (none: only the commit)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=patterns or ["\0"])
    except Exception as e:  # the network boundary: offline, not found, gated, connection errors alike
        raise UserError(f"{where} cannot be had ({first_line(e)})") from None


def _streamed(repo: str, *, what: str, name: str | None, split: str, data_files: tuple[str, ...],
              revision: str) -> HubFiles:
    from huggingface_hub import HfApi, HfFileSystem, hf_hub_download

    where = f"{what}: hub dataset {repo}@{revision}"
    try:
        commit = HfApi().dataset_info(repo, revision=revision).sha
        patterns = list(data_files) or _card_patterns(
            _card(hf_hub_download(repo, "README.md", repo_type="dataset", revision=commit)), repo, name, split, what)
        fs = HfFileSystem()
        root = f"datasets/{repo}@{quote(commit, safe='')}/"
        found = sorted({m for pattern in patterns for m in fs.glob(root + pattern) if fs.isfile(m)})
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{where} cannot be had ({first_line(e)})") from None
    if not found:
        raise UserError(f"{where}: no files match {', '.join(patterns)}")
    return HubFiles(repo, commit, tuple("hf://" + m for m in found))


def _card(path: str) -> dict:
    """The YAML front matter of a dataset card (README.md), where the hub declares configurations."""
    if not os.path.exists(path):
        return {}
    text = open(path, encoding="utf-8").read()
    m = re.match(r"---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    try:
        meta = yaml.safe_load(m[1]) if m else {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: the dataset card's YAML header does not parse ({first_line(e)})") from None
    return meta if isinstance(meta, dict) else {}


def _card_patterns(card: dict, repo: str, name: str | None, split: str, what: str) -> list[str]:
    """The file patterns of configuration `name`'s split, as the card's `configs:` list declares them."""
    configs = [c for c in card.get("configs") or [] if isinstance(c, dict)]
    if not configs:
        raise UserError(f"{what}: hub dataset {repo} declares no configurations in its card; set hf_data_files to "
                        "the files to read (globs inside the repo, e.g. 'nl/*.parquet')")
    names = [c.get("config_name", "default") for c in configs]
    if name is None:
        chosen = [c for c in configs if c.get("default")] or [c for c in configs if c.get("config_name") == "default"]
        if not chosen and len(configs) > 1:
            raise UserError(f"{what}: hub dataset {repo} has configurations {', '.join(names)}; set hf_name to one")
        config = (chosen or configs)[0]
    elif name in names:
        config = configs[names.index(name)]
    else:
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise UserError(f"{what}: hub dataset {repo} has no configuration {name!r} (it has {shown}); fix hf_name")
    splits = _splits(config.get("data_files"))
    if split not in splits:
        raise UserError(f"{what}: configuration {config.get('config_name', 'default')!r} of {repo} has no split "
                        f"{split!r} (splits: {', '.join(splits) or 'none'}); fix hf_split")
    return splits[split]


def _splits(files) -> dict[str, list[str]]:
    """A card's `data_files` in any of its spellings (a pattern, a list, split/path entries, a mapping)."""
    as_list = lambda v: [v] if isinstance(v, str) else list(v or [])  # noqa: E731
    if isinstance(files, str) or (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        return {"train": as_list(files)}
    if isinstance(files, dict):
        return {str(k): as_list(v) for k, v in files.items()}
    out: dict[str, list[str]] = {}
    for entry in files or []:
        if isinstance(entry, dict) and "split" in entry:
            out.setdefault(str(entry["split"]), []).extend(as_list(entry.get("path")))
    return out
