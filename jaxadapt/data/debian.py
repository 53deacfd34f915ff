"""Real English, Dutch, Russian and German prose, offline: Debian packages of documentation turned into JSONL corpora.

No text hub is reachable where jaxadapt is tested, but a Debian mirror is. `apt-get download` fetches a package
without installing it (no root), `dpkg-deb -x` unpacks it, and the markup is stripped page by page. Each line of
the output is `{"text": ..., "source": "package:path"}`, one page (or one fortune) per document, exact duplicates
dropped, written to a temporary file and renamed so readers never see half a corpus.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from jaxadapt.fs import cache_dir
from jaxadapt.data.markup import fortunes, html_text, roff_text
from jaxadapt.errors import UserError

# corpus -> [(package, kind, directory inside the package)]. The plain language codes are the training corpora;
# the `-eval` corpora come from other packages (the Debian FAQ, man pages, the New Maintainers' Guide), so that an
# adapted model is scored on text of another domain than it trained on. No package feeds both.
PACKAGES = {
    "nl": [("libreoffice-help-nl", "html", "usr/share/libreoffice/help/nl/text")],
    "en": [("libreoffice-help-en-us", "html", "usr/share/libreoffice/help/en-US/text")],
    "ru": [("libreoffice-help-ru", "html", "usr/share/libreoffice/help/ru/text"),
           ("manpages-ru", "man", "usr/share/man/ru"),
           ("fortunes-ru", "fortunes", "usr/share/games/fortunes/ru")],
    "de": [("libreoffice-help-de", "html", "usr/share/libreoffice/help/de/text")],  # e.g. tokenizer extend --protect
    "nl-eval": [("debian-faq-nl", "html", "usr/share/doc/debian/FAQ/nl"),
                ("manpages-nl", "man", "usr/share/man/nl")],
    "en-eval": [("debian-faq", "html", "usr/share/doc/debian/FAQ"),
                ("maint-guide", "html", "usr/share/doc/maint-guide/html")],
    "de-eval": [("debian-faq-de", "html", "usr/share/doc/debian/FAQ/de"),
                ("maint-guide-de", "html", "usr/share/doc/maint-guide-de/html")],
    "ru-eval": [("debian-faq-ru", "html", "usr/share/doc/debian/FAQ/ru"),
                ("maint-guide-ru", "html", "usr/share/doc/maint-guide-ru/html")],
}
MIN_CHARS = 16  # shorter pages are stray titles, not prose


def corpus(lang: str) -> Path:
    """The cached JSONL corpus of a language (nl, en, ru, de, or an evaluation corpus such as nl-eval), fetched on
    first use."""
    path = cache_dir("corpora") / f"debian-{lang}.jsonl"
    return path if path.exists() else fetch(lang, path.parent)[0]


def fetch(lang: str, out_dir: Path) -> tuple[Path, Counter]:
    """Download, unpack and strip the language's packages into `out_dir/debian-{lang}.jsonl`.

    An evaluation corpus (`-eval`) is written in the order of its documents' hashes, so that its first N bytes
    (`jaxadapt eval --max-bytes`) mix its packages and chapters instead of being the first file alone.
    Returns the path and the number of documents per package."""
    if lang not in PACKAGES:
        raise UserError(f"debian corpus: unknown language {lang!r}; choose one of {', '.join(PACKAGES)}")
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise UserError(f"debian corpus: `{tool}` not found; this needs a Debian or Ubuntu system")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"debian-{lang}.jsonl"
    counts: Counter = Counter()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".fetch-") as tmp:
        root = Path(tmp) / "root"
        for deb in _download([p for p, _, _ in PACKAGES[lang]], Path(tmp)):
            _run(["dpkg-deb", "-x", str(deb), str(root)], f"unpack {deb.name}")
        records: dict[bytes, str] = {}
        for package, kind, subdir in PACKAGES[lang]:
            for source, text in _documents(kind, root / subdir):
                key = hashlib.blake2b(text.encode(), digest_size=16).digest()
                if len(text) < MIN_CHARS or key in records:
                    continue
                counts[package] += 1
                records[key] = json.dumps({"text": text, "source": f"{package}:{source}"}, ensure_ascii=False)
        part = Path(tmp) / out.name
        order = sorted(records) if lang.endswith("-eval") else list(records)
        with open(part, "w", encoding="utf-8") as f:
            f.writelines(records[key] + "\n" for key in order)
        if not counts:
            raise UserError(f"debian corpus {lang}: the packages held no documents (looked under "
                            f"{', '.join(d for _, _, d in PACKAGES[lang])})")
        os.replace(part, out)
    return out, counts


def _download(packages: list[str], where: Path) -> list[Path]:
    proc = subprocess.run(["apt-get", "download", *packages], cwd=where, capture_output=True, text=True, check=False)
    if proc.returncode:
        err = proc.stderr.strip()
        if "Unable to locate package" in err or "no candidate" in err or "has no installation candidate" in err:
            raise UserError(f"apt does not know {', '.join(packages)}: its package lists are missing or stale; "
                            f"run `apt-get update` (as root) and retry")
        raise UserError(f"`apt-get download {' '.join(packages)}` failed: {err[-500:]}")
    debs = sorted(where.glob("*.deb"))
    if len(debs) != len(packages):
        raise UserError(f"`apt-get download` left {len(debs)} .deb files for {len(packages)} packages in {where}")
    return debs


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise UserError(f"could not {what}: {proc.stderr.strip()[-500:]}")


def _documents(kind: str, top: Path) -> Iterator[tuple[str, str]]:
    """(path relative to `top`, text) of every document of one unpacked package directory."""
    files = sorted(p for p in top.rglob("*") if p.is_file() and not p.is_symlink())
    for path in files:
        rel = str(path.relative_to(top))
        if kind == "html" and path.suffix == ".html":
            yield rel, html_text(path.read_text("utf-8", errors="replace"))
        elif kind == "man" and path.suffix == ".gz":
            text = roff_text(gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace"))
            if text is not None:
                yield rel, text
        elif kind == "fortunes" and path.suffix != ".dat":
            for i, entry in enumerate(fortunes(path.read_text("utf-8", errors="replace"))):
                yield f"{rel}#{i}", entry
