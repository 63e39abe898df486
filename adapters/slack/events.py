"""Slack events as the core's ``Inbound``: which events are for the bot, and how to read them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from adapters.slack.render import unescape
from core.messages import Attachment, Inbound
from core.voice import VOICE_KINDS

CHANNEL = "slack"

# Message subtypes a person produces when they write something new; edits, deletions, joins,
# bot posts and the rest are not questions for the bot.
_PERSON_SUBTYPES = (None, "file_share", "thread_broadcast")
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")


@dataclass(frozen=True)
class BotIdentity:
    user_id: str
    bot_id: str
    team: str = ""


def is_dm(channel_id: str) -> bool:
    return channel_id.startswith("D")


def from_person(event: dict[str, Any], bot: BotIdentity | None) -> bool:
    """A new message written by a person other than this bot."""
    if event.get("subtype") not in _PERSON_SUBTYPES or event.get("hidden"):
        return False
    if event.get("bot_id") or event.get("bot_profile"):
        return False
    user = event.get("user")
    if not isinstance(user, str) or not user:
        return False
    return bot is None or user != bot.user_id


def mentions(text: str, user_id: str) -> bool:
    return any(m.group(1) == user_id for m in _MENTION.finditer(text))


def clean_text(text: str, bot: BotIdentity | None) -> str:
    """The words a person typed: the bot's own mention removed, links shown as written,
    Slack's escaping undone."""

    def mention(match: re.Match[str]) -> str:
        return "" if bot is not None and match.group(1) == bot.user_id else match.group(0)

    text = _MENTION.sub(mention, text)
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    return re.sub(r"[ \t]{2,}", " ", unescape(text)).strip()


def is_audio(file: dict[str, Any]) -> bool:
    """An audio file share: an uploaded recording (``audio/*``) or a clip recorded in Slack."""
    mime = str(file.get("mimetype") or "").lower()
    return mime.startswith("audio/") or file.get("subtype") == "slack_audio"


def attachment(file: dict[str, Any]) -> Attachment:
    """A shared file as the core sees it: audio with what Slack says of it (the file id to fetch
    it by, its size, type and length), anything else by its name only."""
    name = str(file.get("name") or file.get("title") or "") or None
    if not is_audio(file):
        return Attachment("file", name)
    size, duration_ms = file.get("size"), file.get("duration_ms")
    mime = str(file.get("mimetype") or "") or None
    return Attachment(
        "audio",
        name,
        file_id=str(file["id"]) if file.get("id") else None,
        duration=duration_ms / 1000 if isinstance(duration_ms, int | float) else None,
        size=size if isinstance(size, int) else None,
        mime=mime,
    )


def attachments_of(event: dict[str, Any]) -> tuple[Attachment, ...]:
    # Audio first: the core transcribes the first voice attachment of a message.
    found = [attachment(f) for f in event.get("files") or [] if isinstance(f, dict)]
    return tuple(sorted(found, key=lambda a: a.kind not in VOICE_KINDS))


def first_audio(event: dict[str, Any]) -> Attachment | None:
    return next((a for a in attachments_of(event) if a.kind in VOICE_KINDS), None)


def to_inbound(
    event: dict[str, Any],
    event_id: str | None,
    thread: str,
    bot: BotIdentity | None,
    sender_name: str | None = None,
) -> Inbound:
    attachments = attachments_of(event)
    extra = {"ts": str(event.get("ts", ""))}
    if event.get("channel_type"):
        extra["channel_type"] = str(event["channel_type"])
    return Inbound(
        channel=CHANNEL,
        chat_key=str(event["channel"]),
        sender_id=str(event["user"]),
        sender_name=sender_name,
        text=clean_text(str(event.get("text") or ""), bot),
        event_id=event_id,
        thread=thread,
        attachments=attachments,
        extra=extra,
    )
