"""Plain prose out of the markup real corpora come in: HTML pages, roff man pages, fortune files.

Paragraphs are separated by one blank line and whitespace inside a paragraph collapses to single spaces, so the
text a model trains on looks like text, not like the layout of its source.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIP = {"script", "style", "nav", "head", "header", "footer", "aside", "noscript", "template", "svg", "button"}
_BLOCK = {"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "section", "article", "pre",
          "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "main", "figure", "figcaption", "td", "th"}
_VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "track", "wbr"}


def paragraphs(chunks: list[str]) -> str:
    """Join paragraph chunks: collapse inner whitespace, drop empty ones, one blank line between them."""
    return "\n\n".join(p for p in (" ".join(c.split()) for c in chunks) if p)


class _Html(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.chunks, self._current, self._skip = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self._skip += 1
        elif tag in _BLOCK:
            self._break()

    def handle_startendtag(self, tag, attrs):
        if tag in _BLOCK:
            self._break()

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self._skip = max(self._skip - 1, 0)
        elif tag in _BLOCK:
            self._break()

    def handle_data(self, data):
        if not self._skip:
            self._current.append(data)

    def _break(self):
        self.chunks.append("".join(self._current))
        self._current = []


def html_text(html: str) -> str:
    """The visible prose of an HTML page: scripts, styles, navigation, header/footer and asides dropped."""
    parser = _Html()
    parser.feed(html)
    parser.close()
    parser._break()
    return paragraphs(parser.chunks)


_ROFF_ESCAPES = [
    (re.compile(r'\\["#].*$'), ""),  # comments to the end of the line
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # string registers
    (re.compile(r"\\\(em|\\\[em\]"), "—"), (re.compile(r"\\\(en|\\\[en\]"), "–"),
    (re.compile(r"\\\(bu|\\\[bu\]"), "•"), (re.compile(r"\\\((aq|cq)"), "'"),
    (re.compile(r"\\\((dq|lq|rq)"), '"'), (re.compile(r"\\\(co"), "©"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other named glyphs
    (re.compile(r"\\[-]"), "-"), (re.compile(r"\\e"), "\\"), (re.compile(r"\\[ ~0]"), " "),
    (re.compile(r"\\[&|^c%:)/,]"), ""),
]
_ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}
_BREAKS = {"PP", "P", "LP", "TP", "IP", "HP", "SH", "SS", "sp", "br", "TH", "Sh", "Pp", "nf", "fi", "RS", "RE",
           "EX", "EE", "TQ", "PD", "in", "ti"}
_TEXT_MACROS = {"B", "I", "SM", "SB", "SH", "SS", "IP", "TQ", "Nm", "Nd", "Ar", "Fl", "Pa", "Em", "Sy"}


def _unescape(line: str) -> str:
    for pattern, repl in _ROFF_ESCAPES:
        line = pattern.sub(lambda _, r=repl: r, line)  # literal replacements, backslash included
    return line


def _args(rest: str) -> list[str]:
    return [a[1:-1] if a.startswith('"') and a.endswith('"') and len(a) > 1 else a
            for a in re.findall(r'"[^"]*"|\S+', rest)]


def roff_text(source: str) -> str | None:
    """Prose of a man page in roff (man or mdoc macros); None for a `.so` redirect to another page."""
    chunks, current = [], []
    for raw in source.splitlines():
        if re.match(r"""^[.']?\s*\\["#]""", raw) or raw.strip() in (".", "'"):
            continue
        if raw.startswith((".", "'")):
            name, _, rest = raw[1:].strip().partition(" ")
            if name == "so":
                return None
            if name in _BREAKS:
                chunks.append(" ".join(current))
                current = []
            args = _args(rest)
            if name in _ALTERNATING:
                current.append(_unescape("".join(args)))
            elif name in _TEXT_MACROS and args:
                current.append(_unescape(" ".join(args[:1] if name == "IP" else args)))  # .IP tag [indent]
            if name in ("SH", "SS"):  # a heading is a paragraph of its own
                chunks.append(" ".join(current))
                current = []
            continue
        current.append(_unescape(raw))
    chunks.append(" ".join(current))
    return paragraphs(chunks)


def fortunes(text: str) -> list[str]:
    """The entries of a fortune file, which are separated by lines holding only '%'."""
    return [e.strip("\n") for e in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE) if e.strip()]
