"""The channel-agnostic message model every adapter normalises into and renders from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_TEXT_CHARS = 4000

CUSTOMER_COMMANDS = ("start", "help", "reset", "human", "language")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Command:
    """A parsed bot command: ``/emi 500000 10.5 60`` -> name ``emi``, args ``("500000", ...)``."""

    name: str
    args: tuple[str, ...] = ()

    @property
    def arg_text(self) -> str:
        return " ".join(self.args)


_COMMAND = re.compile(r"^/([A-Za-z][A-Za-z0-9_]{0,31})(?:@\w+)?(?:\s+(.*))?$", re.DOTALL)


def parse_command(text: str) -> Command | None:
    match = _COMMAND.match(text.strip())
    if not match:
        return None
    args = tuple(match.group(2).split()) if match.group(2) else ()
    return Command(match.group(1).lower(), args)


@dataclass(frozen=True)
class Attachment:
    kind: str  # photo, document, voice, video_note, sticker, video, audio, file
    name: str | None = None
    # For audio (voice notes): the platform's file id, the duration in seconds, the size in
    # bytes and the MIME type, as the platform reports them; ``data`` when the audio came with
    # the message itself (a web upload), to be stored with it.
    file_id: str | None = None
    duration: float | None = None
    size: int | None = None
    mime: str | None = None
    data: bytes | None = field(default=None, repr=False)

    def audio_ref(self) -> dict[str, object]:
        """What is stored of a voice note in its message's meta (``meta["audio"]``)."""
        ref = {
            "kind": self.kind,
            "file_id": self.file_id,
            "name": self.name,
            "duration": self.duration,
            "size": self.size if self.size is not None else (len(self.data) if self.data else None),
            "mime": self.mime,
        }
        return {k: v for k, v in ref.items() if v is not None}


@dataclass(frozen=True)
class Inbound:
    """One message from a person, as every channel delivers it to the core."""

    channel: str
    chat_key: str
    sender_id: str
    text: str
    event_id: str | None = None
    thread: str = ""
    sender_name: str | None = None
    command: Command | None = None
    attachments: tuple[Attachment, ...] = ()
    contact_phone: str | None = None
    # Channel-specific facts the core carries but does not interpret (message ids and the like).
    extra: dict[str, str] = field(default_factory=dict)
    # Someone waits for this message's reply (an API call), possibly in another process.
    awaited: bool = False
    # Written in a group chat (several people, one conversation): admin commands are refused.
    group: bool = False
    # An edit of an earlier message (its platform id): answered a few times at most.
    edit_of: str | None = None
    received_at: datetime = field(default_factory=utcnow)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.channel, self.chat_key, self.thread)


@dataclass(frozen=True)
class Target:
    """Where a reply goes: the channel's own address for a conversation, and the platform id of
    the message it answers (group replies quote it). It travels with the turn, so whichever
    process sends the reply knows what it answers."""

    channel: str
    chat_key: str
    thread: str = ""
    reply_to: str | None = None


@dataclass(frozen=True)
class Choice:
    """A quick reply a channel may render as a button; ``value`` is sent back as the text."""

    label: str
    value: str


@dataclass(frozen=True)
class Citation:
    source: str
    heading: str
    chunk_id: str = ""
    score: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "heading": self.heading,
            "chunk_id": self.chunk_id,
            "score": self.score,
        }


@dataclass(frozen=True)
class QuoteDocument:
    """A quote to send as a PDF with a reply: the inputs that rebuild it exactly (the same
    bytes every time, ``core.quote.quote_pdf``) and the figures the customer received, stored
    with the reply so that what was sent can be shown later."""

    product: str
    amount: str
    tenure_months: int
    annual_rate: str
    quote_date: str  # ISO date
    language: str = "en"
    reference: str = ""
    figures: dict[str, str] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.reference or 'quote'}.pdf"

    def payload(self) -> dict[str, Any]:
        return {
            "kind": "quote",
            "product": self.product,
            "amount": self.amount,
            "tenure_months": self.tenure_months,
            "annual_rate": self.annual_rate,
            "quote_date": self.quote_date,
            "language": self.language,
            "reference": self.reference,
            "figures": dict(self.figures),
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> QuoteDocument:
        return cls(
            str(data["product"]),
            str(data["amount"]),
            int(data["tenure_months"]),
            str(data["annual_rate"]),
            str(data["quote_date"]),
            str(data.get("language") or "en"),
            str(data.get("reference") or ""),
            {str(k): str(v) for k, v in (data.get("figures") or {}).items()},
        )


@dataclass(frozen=True)
class Reply:
    """What the bot says: text in a small markdown subset (**bold**, lists, line breaks)."""

    text: str
    choices: tuple[Choice, ...] = ()
    citations: tuple[Citation, ...] = ()
    request_contact: bool = False
    # The previous reply asked for the contact (a reply keyboard on Telegram): take it away.
    remove_keyboard: bool = False
    # A quote sent with the text as a PDF (channels that cannot send files link or skip it).
    document: QuoteDocument | None = None

    def payload(self) -> dict[str, Any]:
        """The reply as the outbox stores it (JSON)."""
        data: dict[str, Any] = {"text": self.text}
        if self.choices:
            data["choices"] = [{"label": c.label, "value": c.value} for c in self.choices]
        if self.citations:
            data["citations"] = [c.as_dict() for c in self.citations]
        if self.request_contact:
            data["request_contact"] = True
        if self.remove_keyboard:
            data["remove_keyboard"] = True
        if self.document is not None:
            data["document"] = self.document.payload()
        return data

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Reply:
        """A stored reply (an outbox payload, or a message's meta with its text)."""
        return cls(
            str(data.get("text") or ""),
            tuple(
                Choice(str(c.get("label", "")), str(c.get("value", "")))
                for c in data.get("choices") or ()
            ),
            tuple(
                Citation(
                    str(c.get("source", "")),
                    str(c.get("heading", "")),
                    str(c.get("chunk_id", "")),
                    c.get("score"),
                )
                for c in data.get("citations") or ()
            ),
            bool(data.get("request_contact")),
            bool(data.get("remove_keyboard")),
            QuoteDocument.from_payload(data["document"]) if data.get("document") else None,
        )
