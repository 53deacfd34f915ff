"""Write a directory completely or not at all, and never delete what a user already had at an output path.

A directory is built beside its target and renamed into place at the end. If the target exists (an `--overwrite`),
only the entries the command wrote replace their namesakes; everything else in it is left alone. (A single file:
`jaxadapt.fs.atomic_file`.)
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from jaxadapt.errors import UserError
from jaxadapt import fs


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), overwrite: bool = False,
                 what: str = "output") -> Path:
    """Refuse, before any work, an output dir that would destroy or shadow what the user has.

    An output that equals or contains an input is refused; so is an existing file, and an existing non-empty dir
    unless `overwrite`. The nearest existing parent must be a writable dir.
    """
    if fs.is_url(str(out)):
        fs.check_reachable(str(out), what)
        url = fs.path(out)
        if url.is_file():
            raise UserError(f"{what} {out}: exists and is a file, not a directory")
        _refuse_nonempty(url, overwrite, what)
        return url
    out = Path(out)
    here = out.resolve()
    for src in inputs:
        if src is None or "://" in str(src) or not Path(src).exists():
            continue  # hub ids and URLs are not local paths
        s = Path(src).resolve()
        if here == s or here in s.parents:
            raise UserError(f"{what} {out}: it {'is' if here == s else 'contains'} the input {src}; write to a "
                            "directory of its own")
    if out.exists() and not out.is_dir():
        raise UserError(f"{what} {out}: exists and is a file, not a directory")
    _refuse_nonempty(out, overwrite, what)
    return _writable(out, what)


def _refuse_nonempty(out, overwrite: bool, what: str) -> None:
    """An existing non-empty dir (a prefix holding objects, on a bucket) is refused unless `overwrite`."""
    held = sorted(p.name for p in out.iterdir()) if not overwrite and out.is_dir() else []
    if held:
        listing = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise UserError(f"{what} {out}: exists and is not empty ({listing}); pass --overwrite to replace the files "
                        "this command writes (nothing else there is touched), or choose another path")


def check_file_output(out: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before any work, an output file that cannot be written (a dir there, a file or read-only dir above;
    for a URL, a prefix holding objects there or a bucket that cannot be reached)."""
    if fs.is_url(str(out)):
        fs.check_reachable(str(out), what)
        url = fs.path(out)
        if url.is_dir():
            raise UserError(f"{what} {out}: is a directory, expected a file path")
        return url
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{what} {out}: is a directory, expected a file path")
    return _writable(out, what, out.parent)


def _writable(out: Path, what: str, parent: Path | None = None) -> Path:
    """`out` if the nearest existing dir at or above `parent` (default: `out` itself) is writable."""
    parent = out if parent is None else parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {out}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {out}: {parent} is not writable")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, replaces: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary dir next to `out`; on success its entries land in `out`, on any error it is deleted and
    `out` is untouched.

    A new or empty `out` is replaced in one rename. Into an existing one, each written entry replaces its namesake
    (swapped aside, removed after), and so do entries matching the `replaces` globs: files of the same kind that
    this write would leave stale (another shard count of a model). Nothing else in `out` is touched.
    """
    if fs.is_url(str(out)):
        with _url_dir(str(out), replaces) as tmp:
            yield tmp
        return
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except (FileExistsError, NotADirectoryError, PermissionError) as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the result from other users of a shared cache
        yield tmp
        if out.is_dir() and any(out.iterdir()):
            _merge(tmp, out, replaces)
        else:
            if out.is_dir():
                out.rmdir()  # empty: nothing of the user's is lost
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _url_dir(out: str, replaces: tuple[str, ...]) -> Iterator[Path]:
    """An object store has no rename: the dir is built locally, then published object by object, configs last
    (`config.json`, `adapter_config.json`: what loaders open first), so an upload cut short leaves no dir that a
    loader takes for complete. Stale objects of the kinds written (`replaces`) are deleted before the upload."""
    tmp = Path(tempfile.mkdtemp(prefix="jaxadapt-upload-"))
    try:
        yield tmp
        files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=_publish_order)
        names = {p.relative_to(tmp).parts[0] for p in files}
        store, root = fs.filesystem(out)
        if store.exists(root):
            for held in store.ls(root, detail=False):
                name = held.rstrip("/").rsplit("/", 1)[-1]
                if name in names or any(fnmatch.fnmatch(name, g) for g in replaces):
                    store.rm(held, recursive=True)
        for p in files:
            store.put_file(str(p), f"{root.rstrip('/')}/{p.relative_to(tmp).as_posix()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish_order(p: Path) -> tuple[int, str]:
    last = p.name in ("config.json", "adapter_config.json")
    return (2 if last else 1 if p.suffix == ".json" else 0), str(p)


def _merge(tmp: Path, out: Path, replaces: tuple[str, ...]) -> None:
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    new = {p.name for p in tmp.iterdir()}
    stale = [p for p in out.iterdir() if p.name in new or any(fnmatch.fnmatch(p.name, g) for g in replaces)]
    for p in stale:
        os.replace(p, aside / p.name)
    for name in new:
        os.replace(tmp / name, out / name)
    tmp.rmdir()
    shutil.rmtree(aside, ignore_errors=True)
