"""How a core ``Reply`` looks on Telegram: HTML with safe escaping (and a plain-text twin for
when Telegram rejects the markup), split to Telegram's 4096-character limit without losing text,
choices as inline keyboards whose ``callback_data`` fits in 64 bytes."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections import OrderedDict
from dataclasses import dataclass

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
)

from core.messages import Choice, Citation, Reply

MAX_MESSAGE_CHARS = 4096
MAX_CALLBACK_BYTES = 64
SHARE_CONTACT_LABEL = "📱 Share my phone number"

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_BULLET = re.compile(r"^(\s*)- ", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?…](?=\s)")


def utf16_len(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Chunk:
    """One Telegram message worth of text, as HTML and as the plain-text fallback."""

    html: str
    plain: str


def to_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    return _BULLET.sub(r"\1• ", _BOLD.sub(r"<b>\1</b>", escaped))


def to_plain(text: str) -> str:
    return _BULLET.sub(r"\1• ", _BOLD.sub(r"\1", text))


def citation_line(citations: tuple[Citation, ...], limit: int = 3) -> str:
    names: list[str] = []
    for citation in citations:
        name = f"{citation.source} ({citation.heading})" if citation.heading else citation.source
        if name not in names:
            names.append(name)
    shown = "; ".join(names[:limit])
    if len(names) > limit:
        shown += f" and {len(names) - limit} more"
    return f"Sources: {shown}"


def reply_text(reply: Reply) -> str:
    """The full text of a reply in the markdown subset, citations included."""
    text = reply.text.strip()
    if reply.citations:
        text = (
            f"{text}\n\n{citation_line(reply.citations)}"
            if text
            else citation_line(reply.citations)
        )
    return text


def _prefix_fitting(text: str, limit: int) -> int:
    """The length of the longest prefix of ``text`` within ``limit`` UTF-16 units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def _cut_point(text: str, limit: int) -> int:
    """Where to cut ``text`` so the head fits: a paragraph break if there is one reasonably
    far in, else a line break, a sentence end, a space, and only then mid-word."""
    end = _prefix_fitting(text, limit)
    window = text[: end + 1]  # a separator right at the limit still counts
    floor = end // 4
    for separator in ("\n\n", "\n"):
        at = window.rfind(separator)
        if at > floor:
            return at
    sentence_ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= end]
    if sentence_ends and sentence_ends[-1] > floor:
        return sentence_ends[-1]
    at = window.rfind(" ")
    if at > floor:
        return at
    return max(end, 1)


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Split markdown-subset text into pieces of at most ``limit`` UTF-16 units each. Only
    whitespace at the cuts is dropped; a bold span cut in two is closed and reopened."""
    if limit < 8:
        raise ValueError("limit must be at least 8")
    rest = text.strip()
    pieces: list[str] = []
    while utf16_len(rest) > limit:
        # Room for the two "**" that close a bold span cut at the boundary.
        cut = _cut_point(rest, limit - 2)
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if head.count("**") % 2 and head.strip("*"):
            head, rest = head + "**", "**" + rest
        if head:
            pieces.append(head)
    if rest:
        pieces.append(rest)
    return pieces


def render_chunks(reply: Reply, limit: int = MAX_MESSAGE_CHARS) -> list[Chunk]:
    """The messages a reply becomes. The visible text of each (HTML after parsing, or the plain
    twin) is never longer than its markdown source, so measuring the source is safe."""
    return [
        Chunk(to_html(piece), to_plain(piece)) for piece in split_text(reply_text(reply), limit)
    ]


def render_text(text: str) -> Chunk:
    return Chunk(to_html(text), to_plain(text))


class CallbackCodec:
    """Maps a choice's value to ``callback_data`` of at most 64 bytes and back.

    Short values travel as they are, so buttons keep working across restarts. Longer ones (and
    any starting with the marker) travel as a digest kept in a bounded in-memory table; a digest
    the table no longer holds decodes to ``None`` and the user is asked to type instead."""

    MARKER = "~"

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._values: OrderedDict[str, str] = OrderedDict()

    def encode(self, value: str) -> str:
        short = len(value.encode("utf-8")) <= MAX_CALLBACK_BYTES
        if value and short and not value.startswith(self.MARKER):
            return value
        digest = hashlib.sha256(value.encode("utf-8")).digest()
        key = self.MARKER + base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.capacity:
            self._values.popitem(last=False)
        return key

    def decode(self, data: str) -> str | None:
        if not data:
            return None
        if data.startswith(self.MARKER):
            return self._values.get(data)
        return data


def inline_keyboard(choices: tuple[Choice, ...], codec: CallbackCodec) -> InlineKeyboardMarkup:
    """Short labels two to a row, long ones one to a row, in the order given."""
    buttons = [InlineKeyboardButton(c.label, callback_data=codec.encode(c.value)) for c in choices]
    per_row = 2 if all(len(c.label) <= 18 for c in choices) else 1
    rows = [buttons[i : i + per_row] for i in range(0, len(buttons), per_row)]
    return InlineKeyboardMarkup(rows)


def contact_keyboard() -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup(
        [[KeyboardButton(SHARE_CONTACT_LABEL, request_contact=True)]],
        resize_keyboard=True,
        one_time_keyboard=True,
        input_field_placeholder="or type your 10-digit mobile number",
    )
