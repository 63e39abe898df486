"""Reading documents into heading-scoped sections: markdown, plain text, HTML and PDF."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from core.errors import KnowledgeError
from core.knowledge.types import Section

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf")
MAX_FILE_BYTES = 20 * 1024 * 1024

_ATX = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


class DocumentError(KnowledgeError):
    """One document cannot be ingested; the message says why in one line."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def read_sections(path: Path) -> list[Section]:
    """The sections of one file, or ``DocumentError`` naming what is wrong with it."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kinds = ", ".join(SUPPORTED_SUFFIXES)
        raise DocumentError(path, f"unsupported file type {suffix or '(none)'!r}; use {kinds}")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DocumentError(path, f"too large ({size} bytes; the limit is {MAX_FILE_BYTES})")
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(path, f"cannot read: {exc.strerror or exc}") from exc
    if not data.strip():
        raise DocumentError(path, "empty file")
    if suffix == ".pdf":
        sections = pdf_sections(path, data)
    else:
        text = _decode_text(path, data)
        if suffix in (".md", ".markdown"):
            sections = markdown_sections(text)
        elif suffix in (".html", ".htm"):
            sections = html_sections(text)
        else:
            sections = [Section("", _tidy(text))]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise DocumentError(path, "no text to ingest")
    return sections


def _decode_text(path: Path, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError(path, "binary content in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(path, f"not UTF-8 text (byte {exc.start})") from exc


def _tidy(text: str) -> str:
    """Collapse runs of blank lines and trailing spaces; keep paragraph breaks."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_BLOCK_START = re.compile(r"^\s*([-*+]\s|\d+[.)]\s|\||>|```|~~~)")


def _unwrap(text: str) -> str:
    """Join hard-wrapped lines back into their paragraph or list item, so a list item is one
    line (and one sentence to the chunker). Tables, quotes and code keep their lines."""
    out: list[str] = []
    for line in text.split("\n"):
        if (
            out
            and out[-1]
            and line.strip()
            and not _BLOCK_START.match(line)
            and not out[-1].lstrip().startswith(("|", "```", "~~~"))
        ):
            out[-1] = f"{out[-1]} {line.strip()}"
        else:
            out.append(line)
    return "\n".join(out)


def markdown_sections(text: str) -> list[Section]:
    """Split on ATX headings (outside code fences); each section carries its heading path."""
    path: list[tuple[int, str]] = []
    sections: list[Section] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        content = _unwrap(_tidy("\n".join(body)))
        if content:
            sections.append(Section(" > ".join(title for _, title in path), content))
        body.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _ATX.match(line)
        if match:
            flush()
            level = len(match.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, match.group(2).strip()))
        else:
            body.append(line)
    flush()
    return sections


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "head"})
    _BLOCK = frozenset(
        {"p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol", "dd", "dt"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self._path: list[tuple[int, str]] = []
        self._body: list[str] = []
        self._heading: list[str] | None = None
        self._level = 0
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self._heading, self._level = [], int(tag[1])
        elif tag in self._BLOCK:
            self._body.append("\n")
        if tag == "li":
            self._body.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            title = " ".join("".join(self._heading).split())
            while self._path and self._path[-1][0] >= self._level:
                self._path.pop()
            if title:
                self._path.append((self._level, title))
            self._heading = None
        elif tag in self._BLOCK:
            self._body.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._heading is not None:
            self._heading.append(data)
        else:
            self._body.append(re.sub(r"[ \t\r\n]+", " ", data))

    def _flush(self) -> None:
        text = "\n".join(line.strip() for line in "".join(self._body).split("\n"))
        content = _tidy(text)
        if content:
            self.sections.append(Section(" > ".join(t for _, t in self._path), content))
        self._body.clear()

    def close(self) -> None:
        super().close()
        self._flush()


def html_sections(text: str) -> list[Section]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    return parser.sections


def pdf_sections(path: Path, data: bytes) -> list[Section]:
    """One section per page, headed "Page N" (PDFs carry no reliable heading structure)."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(path, "the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        # pypdf raises several plain types on damaged files, not only its own.
        raise DocumentError(path, f"unreadable PDF ({type(exc).__name__}: {exc})") from exc
    sections = [Section(f"Page {n}", _tidy(text)) for n, text in enumerate(pages, 1)]
    if not any(s.text for s in sections):
        raise DocumentError(path, "the PDF has no extractable text (a scanned image?)")
    return sections
