"""Read local paths and URLs (`gs://`, `hf://`, `memory://`, any fsspec protocol) through one small interface.

Local paths keep the plain `os` calls (fast, and their errors are the familiar ones); anything with a scheme goes
through fsspec, which streams by ranged reads, so a Parquet reader fetches only the row groups it reads. A missing
filesystem package (gcsfs for `gs://`) is a one-line error naming what to install.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from typing import IO

from jaxadapt.errors import UserError

_NEEDS = {"gs": ("gcsfs", "jaxadapt[gcs]"), "gcs": ("gcsfs", "jaxadapt[gcs]"), "s3": ("s3fs", "s3fs")}


def is_url(path: str) -> bool:
    """A path with a scheme (`gs://b/x`, `hf://datasets/...`); `file://` counts as local."""
    return "://" in str(path) and not str(path).startswith("file://")


def is_hub_id(spec: str | os.PathLike) -> bool:
    """`org/name` as the hub spells repo ids (a relative path such as ./x/y or ../x is not one)."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", str(spec))) and not str(spec).startswith((".", "/"))


def local(path: str) -> str:
    return str(path)[len("file://"):] if str(path).startswith("file://") else os.path.expanduser(str(path))


def filesystem(url: str):
    """(fsspec filesystem, path without the scheme) for a URL."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fs = fsspec.filesystem(protocol)
    except ImportError as e:
        module, install = _NEEDS.get(protocol, (e.name or "its fsspec implementation",) * 2)
        raise UserError(f"{url}: {protocol}:// paths need {module} (pip install '{install}')") from None
    except ValueError as e:
        raise UserError(f"{url}: unknown protocol {protocol!r} ({e})") from None
    return fs, fs._strip_protocol(url)


def _join(url: str, path: str) -> str:
    return url.split("://", 1)[0] + "://" + path


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(local(path))
    fs, p = filesystem(path)
    return fs.exists(p)


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(local(path))
    fs, p = filesystem(path)
    return fs.isdir(p)


def has_magic(pattern: str) -> bool:
    return _glob.has_magic(pattern)


def glob(pattern: str) -> list[str]:
    """Sorted matches; `**` crosses directories."""
    if not is_url(pattern):
        return sorted(_glob.glob(local(pattern), recursive=True))
    fs, p = filesystem(pattern)
    return sorted(_join(pattern, m) for m, info in fs.glob(p, detail=True).items() if info.get("type") != "directory")


def walk(path: str) -> list[str]:
    """Every file under a dir, in sorted order, skipping hidden names (`.git`, `.cache`)."""
    if not is_url(path):
        found = []
        for root, dirs, files in os.walk(local(path)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [os.path.join(root, f) for f in sorted(files) if not f.startswith(".")]
        return found
    fs, p = filesystem(path)
    root = p.rstrip("/") + "/"
    keep = [m for m in fs.find(p) if not any(part.startswith(".") for part in m[len(root):].split("/"))]
    return [_join(path, m) for m in sorted(keep)]


def open_read(path: str) -> IO[bytes]:
    """A seekable binary file; for URLs a buffered remote file that fetches byte ranges as they are read."""
    try:
        if not is_url(path):
            return open(local(path), "rb")
        fs, p = filesystem(path)
        return fs.open(p, "rb")
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


# ---------------------------------------------------------------------------------------------- writing (run dirs)
def path(p):
    """A path object: `pathlib.Path` for local paths, `etils.epath.Path` (what orbax writes through) for URLs.

    Both spell `/`, `exists`, `is_dir`, `iterdir`, `read_text`, `write_text`, `mkdir`, so run-dir code is written
    once; what an object store cannot do (append, rename a dir, lock) goes through the functions below."""
    import pathlib

    if not is_url(str(p)):
        return pathlib.Path(local(str(p)))
    filesystem(str(p))  # a missing gcsfs is one line here, not a traceback inside epath
    from etils import epath

    return epath.Path(str(p))


def write_text(p, text: str) -> None:
    """Replace a file's content completely or not at all (local: temp file, fsync, rename; object: one upload)."""
    if is_url(str(p)):
        path(p).write_text(text)
        return
    from jaxadapt.io.atomic import atomic_file

    with atomic_file(path(p), encoding="utf-8") as fh:
        fh.write(text)


def append_text(p, text: str) -> None:
    """Append to a file; an object store has no append, so there the object is rewritten with the text added."""
    if not is_url(str(p)):
        with open(local(str(p)), "a", encoding="utf-8") as fh:
            fh.write(text)
        return
    q = path(p)
    q.write_text((q.read_text() if q.exists() else "") + text)


def rmtree(p) -> None:
    if not is_url(str(p)):
        import shutil

        shutil.rmtree(local(str(p)), ignore_errors=True)
        return
    fs, q = filesystem(str(p))
    if fs.exists(q):
        fs.rm(q, recursive=True)


def move(src, dst) -> None:
    """Rename a file or dir; on an object store, a copy of every object under it, then the delete."""
    if not is_url(str(src)):
        os.rename(local(str(src)), local(str(dst)))
        return
    fs, s = filesystem(str(src))
    fs.mv(s, filesystem(str(dst))[1], recursive=True)


def has_files(p) -> bool:
    """Whether a dir holds anything (a prefix on an object store holds an object)."""
    q = path(p)
    return q.is_dir() and any(True for _ in q.iterdir())


def local_copy(url: str, cache: str) -> str:
    """A local mirror of the dir at `url` under `cache` (models and tokenizers are read from local files): files
    already there with the same size are kept, others downloaded to a temp name and renamed, so a copy interrupted
    halfway resumes. Returns the mirror's path; a URL with nothing under it is an error."""
    import hashlib

    fs, root = filesystem(url)
    root = root.rstrip("/")
    files = {f: info.get("size") for f, info in fs.find(root, detail=True).items() if info.get("type") != "directory"}
    if not files:
        raise UserError(f"{url}: no such directory (nothing is stored under it)")
    dest = os.path.join(cache, hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16])
    for f, size in sorted(files.items()):
        target = os.path.join(dest, f[len(root) + 1:])
        if os.path.isfile(target) and os.path.getsize(target) == size:
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{target}.part-{os.getpid()}"
        fs.get_file(f, tmp)
        os.replace(tmp, target)
    return dest
