"""Real prose from Debian packages: markup stripping, the apt error path, and the real (cached) Dutch corpus."""

from __future__ import annotations

import json
import os

import pytest

from jaxadapt.cli import main
from jaxadapt.data.debian import PACKAGES, corpus, fetch
from jaxadapt.data.markup import fortunes, html_text, roff_text
from jaxadapt.errors import UserError


def test_html_keeps_paragraphs_and_drops_chrome():
    page = """<html><head><title>T</title><style>p{}</style><script>var x = "<p>no</p>";</script></head>
    <body><header><a>LibreOffice Help</a></header><nav><a>Modules</a></nav>
    <h1>Een  grafiek\n invoegen</h1><p>U kunt een <b>kopie</b> invoegen&nbsp;&amp; verplaatsen.</p>
    <ol><li>Open het document.</li><li>Sleep<br>hem.</li></ol><footer><p>debug info</p></footer></body></html>"""
    assert html_text(page) == ("Een grafiek invoegen\n\nU kunt een kopie invoegen & verplaatsen.\n\n"
                               "Open het document.\n\nSleep\n\nhem.")


def test_roff_man_page():
    page = r""".\" comment
.TH motd 5 "2022" "Linux"
.SH ИМЯ
motd \- сообщение дня
.SH ОПИСАНИЕ
Содержимое \fI/etc/motd\fP выводится \fBlogin\fP(1).
.PP
.BR issue (5),
.IP \(bu 3
пункт \(em один
"""
    assert roff_text(page) == ("ИМЯ\n\nmotd - сообщение дня\n\nОПИСАНИЕ\n\nСодержимое /etc/motd выводится login(1)."
                               "\n\nissue(5),\n\n• пункт — один")
    assert roff_text(".so man3/other.3\n") is None


def test_fortunes_split_on_percent_lines():
    assert fortunes("Один.\n\t\t-- А\n%\nДва\nстроки\n%\n%\n") == ["Один.\n\t\t-- А", "Два\nстроки"]


def test_missing_apt_lists_say_run_apt_get_update(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text("#!/bin/sh\necho 'E: Unable to locate package libreoffice-help-nl' >&2\nexit 100\n")
    (fake / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(UserError, match="package lists are missing or stale; run `apt-get update`"):
        fetch("nl", tmp_path / "out")
    assert not list((tmp_path / "out").iterdir()), "nothing half-written is left behind"


def test_unknown_language():
    with pytest.raises(UserError, match="unknown language 'fr'; choose one of nl, en, ru, de, nl-eval"):
        fetch("fr", "unused")


def test_real_dutch_corpus_from_debian(capsys):
    """Downloads libreoffice-help-nl (~3 MB) once into the cache; later runs reuse it."""
    path = corpus("nl")
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    assert len(rows) > 2000
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts), "deduplicated"
    assert all(r["source"].startswith("libreoffice-help-nl:") and r["source"].endswith(".html") for r in rows)
    joined = "\n".join(texts)
    assert "<p" not in joined and "function(" not in joined
    assert joined.count(" het ") > 1000 and joined.count(" de ") > 1000, "Dutch prose"
    assert main(["data", "stats", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "source\tdocuments\tbytes\twords" and out[1].startswith(f"{path}\t{len(rows)}\t")


def test_evaluation_corpora_share_no_package_with_training_corpora():
    train = {pkg for lang, specs in PACKAGES.items() if not lang.endswith("-eval") for pkg, _, _ in specs}
    held = {pkg for lang, specs in PACKAGES.items() if lang.endswith("-eval") for pkg, _, _ in specs}
    assert train and held and not train & held
    assert {"nl-eval", "en-eval", "ru-eval", "de-eval"} <= set(PACKAGES)


def test_real_dutch_evaluation_corpus_mixes_its_packages():
    """Downloads debian-faq-nl and manpages-nl (~0.9 MB) once into the cache."""
    rows = [json.loads(line) for line in corpus("nl-eval").open(encoding="utf-8")]
    packages = [r["source"].split(":", 1)[0] for r in rows]
    assert set(packages) == {"debian-faq-nl", "manpages-nl"}
    assert len(set(packages[:10])) == 2, "hash order: the first documents already come from both packages"
    joined = "\n".join(r["text"] for r in rows)
    assert joined.count(" het ") > 300 and "Debian" in joined
