"""A real hub-cache layout built on disk, and a switch that points huggingface_hub at it with the network refused.

The hub client keeps `<type>s--ORG--NAME/refs/<branch>` (a commit, no newline), `snapshots/<commit>/<path>` (each a
relative symlink into `blobs/<sha256>`); offline it answers from exactly that. It reads
`huggingface_hub.constants.HF_HUB_CACHE` at each call (the env var only at import), so patching the constant points
every command at a test's cache.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants


def add_snapshot(cache: Path, repo_type: str, repo_id: str, commit: str, files: dict[str, bytes],
                 refs: tuple[str, ...] = ("main",)) -> Path:
    """Cache `files` (path in repo -> bytes) as `repo_id` at `commit`, with branches `refs` pointing at it."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for d in (repo / "blobs", repo / "refs", snapshot):
        d.mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def offline(cache: Path, monkeypatch) -> Iterator[list]:
    """Within the generator: the hub client reads `cache` offline, and any socket connect fails (and is listed)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tried: list = []

    def refuse(sock, address, *args):
        tried.append(address)
        raise OSError(f"hubcache: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield tried
    assert not tried, f"something tried to reach the network: {tried}"
