"""Read local paths and URLs (`gs://`, `hf://`, `memory://`, any fsspec protocol) through one small interface.

Local paths keep the plain `os` calls (fast, and their errors are the familiar ones); anything with a scheme goes
through fsspec, which streams by ranged reads, so a Parquet reader fetches only the row groups it reads. A missing
filesystem package (gcsfs for `gs://`) is a one-line error naming what to install.

This is the lowest layer: it imports nothing else of jaxadapt but `errors`, and every write of a single file that
must be complete or absent (`atomic_file`) is here.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from jaxadapt.errors import UserError

_NEEDS = {"gs": ("gcsfs", "jaxadapt[gcs]"), "gcs": ("gcsfs", "jaxadapt[gcs]"), "s3": ("s3fs", "s3fs")}
_BUCKETED = {"gs", "gcs", "s3", "s3a", "az", "abfs", "abfss"}  # the first part of the path is a bucket/container


def cache_dir(*parts: str) -> Path:
    """A dir under the cache root ($JAXADAPT_CACHE, else ~/.cache/jaxadapt), created if missing: downloaded models
    and corpora, conversions, compiled kernels, the measured matmul peak."""
    root = Path(os.environ.get("JAXADAPT_CACHE") or Path.home() / ".cache" / "jaxadapt")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def isfile(path: str) -> bool:
    if not is_url(str(path)):
        return os.path.isfile(local(str(path)))
    fs, p = filesystem(str(path))
    return fs.isfile(p)


def name(path) -> str:
    """The last part of a path or URL as written (`gs://b/runs/a/` -> `a`, `.` -> the current dir's name)."""
    p = str(path)
    return os.path.basename(p.rstrip("/") if is_url(p) else os.path.abspath(local(p)))


def read_text(path) -> str:
    """A whole UTF-8 file; a missing one raises FileNotFoundError, for local paths and URLs alike."""
    if not is_url(str(path)):
        with open(local(str(path)), encoding="utf-8") as fh:
            return fh.read()
    fs, p = filesystem(str(path))
    return fs.cat_file(p).decode("utf-8")


def check_reachable(url: str, what: str = "output") -> None:
    """Before any work, a one-line error for a URL that cannot be written: an unknown scheme or a missing
    filesystem package, and on an object store a bucket that does not exist or cannot be reached."""
    try:
        fs, p = filesystem(str(url))
    except UserError as e:
        raise UserError(f"{what} {e}") from None
    protocol = str(url).split("://", 1)[0]
    if protocol not in _BUCKETED:
        return
    bucket = p.strip("/").split("/", 1)[0]
    try:
        found = bool(bucket) and fs.exists(bucket)
    except Exception as e:  # noqa: BLE001 (the network boundary: auth, DNS, refused connections alike)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what} {url}: cannot reach {protocol}://{bucket} ({first[:200]})") from None
    if not found:
        raise UserError(f"{what} {url}: no bucket {protocol}://{bucket} (or it is not visible with these "
                        "credentials); create it first")


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


@contextlib.contextmanager
def atomic_file(out, mode: str = "w", **kw) -> Iterator[IO]:
    """Open a temporary file for writing that becomes `out` only if the block succeeds.

    Local: a temp file next to `out`, fsynced, renamed over it. URL: a local temp file uploaded as one object at
    the end (an object store publishes an upload whole or not at all), so a failure leaves `out` as it was."""
    if is_url(str(out)):
        store, dest = filesystem(str(out))
        fd, tmp = tempfile.mkstemp(prefix="jaxadapt-upload-")
        try:
            with os.fdopen(fd, mode, **kw) as fh:
                yield fh
            try:
                store.put_file(tmp, dest)
            except OSError as e:
                raise UserError(f"cannot write {out}: {getattr(e, 'strerror', None) or e}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return
    target = local(str(out))
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
    try:
        with os.fdopen(fd, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the new content is on disk before the name points at it
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(p, text: str) -> None:
    """Replace a file's content completely or not at all (local: temp file, fsync, rename; object: one upload)."""
    with atomic_file(p, encoding="utf-8") as fh:
        fh.write(text)


def append_text(p, text: str) -> None:
    """Append to a file; an object store has no append, so there the object is rewritten with the text added."""
    if not is_url(str(p)):
        with open(local(str(p)), "a", encoding="utf-8") as fh:
            fh.write(text)
        return
    q = path(p)
    q.write_text((q.read_text() if q.exists() else "") + text)


def create_new(p, text: str) -> bool:
    """Write a file only if there is none, atomically against every other writer; False when one exists. Local:
    O_EXCL. Object store: a create-only upload (GCS: ifGenerationMatch=0), which the store itself decides, so two
    hosts cannot both succeed. A filesystem whose fsspec driver cannot make one is an error naming it."""
    if not is_url(str(p)):
        try:
            fd = os.open(local(str(p)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return True
    fs, q = filesystem(str(p))
    try:
        fs.pipe_file(q, text.encode("utf-8"), mode="create")
    except FileExistsError:
        return False
    except TypeError:  # a driver without create-only writes (its pipe_file takes no `mode`)
        raise UserError(f"{p}: {type(fs).__name__} cannot write an object only if it is absent, which a run "
                        "dir's lock needs; use gs:// or a local or mounted path") from None
    return True


def remove(p) -> None:
    """Delete one file if it is there."""
    if not is_url(str(p)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local(str(p)))
        return
    fs, q = filesystem(str(p))
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(q)


def read_version(p) -> tuple[str, str] | None:
    """A file's text and a token naming this version of it, for `remove_version`; None when it is absent. On GCS the
    token is the object's generation, from the same response as the text; elsewhere it is the text itself."""
    gcs = _gcs(p)
    if gcs is None:
        try:
            text = read_text(p)
        except FileNotFoundError:
            return None
        return text, text
    fs, bucket, key = gcs
    try:
        headers, body = fs.call("GET", "b/{}/o/{}", bucket, key, alt="media")
    except FileNotFoundError:
        return None
    text = body.decode("utf-8")
    return text, headers.get("x-goog-generation") or text


def remove_version(p, version: str) -> bool:
    """Delete a file only if it is still the version `read_version` named; False when it has changed or is gone.
    GCS decides it (a delete with ifGenerationMatch), so of two processes that read the same version only one
    deletes it, and neither deletes what the other wrote meanwhile; elsewhere the text is read again and compared
    just before the delete (a small window remains)."""
    gcs = _gcs(p)
    if gcs is not None and version.isdigit():
        fs, bucket, key = gcs
        try:
            fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=version)
        except (FileExistsError, FileNotFoundError):  # 412: another generation is there now; 404: none is
            return False
        finally:
            fs.invalidate_cache(f"{bucket}/{key}")
        return True
    if not _still(p, version):
        return False
    remove(p)
    return True


def replace_version(p, text: str, version: str) -> str | None:
    """Overwrite a file with `text` only if it is still the version named; the new version, or None when the file
    has changed or is gone. GCS decides it (an upload with ifGenerationMatch); elsewhere the text is compared just
    before the write (a small window remains)."""
    gcs = _gcs(p)
    if gcs is not None and version.isdigit():
        fs, bucket, key = gcs
        try:
            # gcsfs uploads create-only or unconditionally; a generation-matched one is a plain JSON API call
            meta = fs.call("POST", f"{fs._location}/upload/storage/v1/b/{{}}/o", bucket, uploadType="media",
                           name=key, ifGenerationMatch=version, data=text.encode("utf-8"),
                           headers={"Content-Type": "application/octet-stream"}, json_out=True)
        except (FileExistsError, FileNotFoundError):  # 412: another generation is there, or none
            return None
        finally:
            fs.invalidate_cache(f"{bucket}/{key}")
        return str(meta["generation"])
    if not _still(p, version):
        return None
    write_text(p, text)
    return text


def _still(p, version: str) -> bool:
    """Whether the file is still the version named (off GCS: read again and compared)."""
    now = read_version(p)
    return now is not None and now[1] == version


def _gcs(p):
    """(gcsfs filesystem, bucket, key) for a gs:// path, else None."""
    if not str(p).startswith(("gs://", "gcs://")):
        return None
    fs, q = filesystem(str(p))
    bucket, key, _ = fs.split_path(q)
    return fs, bucket, key


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
