"""Chunks that follow headings, capped in size, overlapping where a section must be split."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from core.knowledge.types import Chunk, Section

# About 180 MiniLM tokens: well inside the model's 256-token window, with the heading prepended.
MAX_CHARS = 800
OVERLAP_CHARS = 150

_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+")


def chunk_id(root: str, source: str, heading: str, text: str) -> str:
    digest = hashlib.sha256("\x00".join((root, source, heading, text)).encode("utf-8"))
    return digest.hexdigest()[:32]


def _pieces(text: str, max_chars: int) -> list[str]:
    """Sentence-sized pieces (list items and lines count as sentences), none above the cap."""
    pieces: list[str] = []
    for part in _SENTENCE_END.split(text):
        part = part.strip()
        while len(part) > max_chars:
            cut = part.rfind(" ", 0, max_chars)
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append(part[:cut].strip())
            part = part[cut:].strip()
        if part:
            pieces.append(part)
    return pieces


def split_text(text: str, max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """``text`` as-is when it fits; otherwise windows of whole sentences that repeat about
    ``overlap`` characters of the previous window, so no answer is cut in half."""
    if len(text) <= max_chars:
        return [text]
    windows: list[str] = []
    current: list[str] = []
    size = 0
    for piece in _pieces(text, max_chars):
        if current and size + len(piece) + 1 > max_chars:
            windows.append("\n".join(current))
            carried: list[str] = []
            carried_size = 0
            for previous in reversed(current):
                if carried_size + len(previous) > overlap:
                    break
                carried.insert(0, previous)
                carried_size += len(previous) + 1
            # The carried sentences must leave room for the new one.
            while carried and carried_size + len(piece) + 1 > max_chars:
                carried_size -= len(carried.pop(0)) + 1
            current, size = carried, carried_size
        current.append(piece)
        size += len(piece) + 1
    if current:
        windows.append("\n".join(current))
    return windows


def chunk_sections(
    root: str,
    source: str,
    sections: Iterable[Section],
    max_chars: int = MAX_CHARS,
    overlap: int = OVERLAP_CHARS,
) -> list[Chunk]:
    chunks: dict[str, Chunk] = {}  # identical repeated text keeps one chunk
    position = 0
    for section in sections:
        for text in split_text(section.text, max_chars, overlap):
            cid = chunk_id(root, source, section.heading, text)
            if cid not in chunks:
                chunks[cid] = Chunk(cid, root, source, section.heading, text, position)
                position += 1
    return list(chunks.values())
