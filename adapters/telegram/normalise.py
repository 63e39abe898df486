"""Telegram updates into the core's ``Inbound``: who wrote, where, what, and which update.

Private chats take every message. Groups take only messages addressed to the bot: a mention, a
reply to one of its messages, or a command (a command naming another bot is not ours). Edited
messages count as new messages with their own update id: a customer who corrects "25 lakh" to
"30 lakh" expects the bot to take the correction, and answering again is clearer than silence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from telegram import Chat, Message, MessageEntity, Update

from core.messages import Attachment, Inbound, parse_command

CHANNEL = "telegram"
_COMMAND_TARGET = re.compile(r"^/[A-Za-z][A-Za-z0-9_]*@(\w+)")
_GROUP_TYPES = (Chat.GROUP, Chat.SUPERGROUP)


@dataclass(frozen=True)
class BotIdentity:
    id: int
    username: str

    @property
    def mention(self) -> str:
        return f"@{self.username}".lower()


def normalise_phone(raw: str) -> str:
    """Telegram sends contact numbers with or without "+"; keep "+" and the digits."""
    digits = re.sub(r"\D", "", raw)
    return f"+{digits}" if digits else ""


def _thread(message: Message) -> str:
    # Forum topics are separate conversations; replies must go back to the same topic.
    if message.is_topic_message and message.message_thread_id:
        return str(message.message_thread_id)
    return ""


def _seconds(duration: object) -> float | None:
    """PTB gives durations as ints or timedeltas depending on its settings."""
    if duration is None:
        return None
    total = getattr(duration, "total_seconds", None)
    return float(total()) if callable(total) else float(duration)  # type: ignore[arg-type]


def _attachments(message: Message) -> tuple[Attachment, ...]:
    found: list[Attachment] = []
    if message.photo:
        found.append(Attachment("photo"))
    if message.document is not None:
        found.append(Attachment("document", message.document.file_name))
    # Speech first: the first voice attachment is the one transcribed.
    if message.voice is not None:
        voice = message.voice
        found.append(
            Attachment(
                "voice",
                file_id=voice.file_id,
                duration=_seconds(voice.duration),
                size=voice.file_size,
                mime=voice.mime_type or "audio/ogg",
            )
        )
    if message.audio is not None:
        audio = message.audio
        found.append(
            Attachment(
                "audio",
                audio.file_name,
                file_id=audio.file_id,
                duration=_seconds(audio.duration),
                size=audio.file_size,
                mime=audio.mime_type,
            )
        )
    if message.video_note is not None:
        note = message.video_note
        found.append(
            Attachment(
                "video_note",
                file_id=note.file_id,
                duration=_seconds(note.duration),
                size=note.file_size,
                mime="video/mp4",  # round video messages are MPEG-4
            )
        )
    if message.video is not None:
        found.append(Attachment("video"))
    if message.animation is not None:
        found.append(Attachment("animation"))
    if message.sticker is not None:
        found.append(Attachment("sticker"))
    if message.location is not None:
        found.append(Attachment("location"))
    return tuple(found)


def _addressed(message: Message, text: str, me: BotIdentity) -> tuple[bool, str]:
    """Whether a group message is for this bot, and its text without the mention."""
    addressed = False
    entities = message.parse_entities() if message.text else message.parse_caption_entities()
    for entity, value in entities.items():
        if entity.type == MessageEntity.MENTION and value.lower() == me.mention:
            addressed = True
            text = text.replace(value, " ", 1)
        elif entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == me.id:
            addressed = True
    reply_to = message.reply_to_message
    if reply_to is not None and reply_to.from_user is not None and reply_to.from_user.id == me.id:
        addressed = True
    if text.lstrip().startswith("/"):
        addressed = True
    text = re.sub(r"\s+", " ", text).strip().lstrip(",:;").strip()
    return addressed, text


def normalise(
    update: Update, me: BotIdentity, callback_value: Callable[[str], str | None]
) -> Inbound | None:
    """The inbound message an update carries, or ``None`` when it carries nothing for the core
    (a group message not addressed to the bot, a channel post, a membership change...)."""
    event_id = str(update.update_id)
    query = update.callback_query
    if query is not None:
        value = callback_value(query.data or "")
        if value is None:
            return None
        origin = query.message
        chat_key = str(origin.chat.id) if origin is not None else str(query.from_user.id)
        thread = _thread(origin) if isinstance(origin, Message) else ""
        return Inbound(
            channel=CHANNEL,
            chat_key=chat_key,
            sender_id=str(query.from_user.id),
            text=value,
            event_id=event_id,
            thread=thread,
            sender_name=query.from_user.full_name,
            command=parse_command(value),
            extra={"callback": "1"},
            group=is_group(chat_key),
        )

    message = update.message or update.edited_message
    if message is None:
        return None
    sender = message.from_user
    # Anonymous group admins and other bots write as bots; the core only talks to people.
    if sender is None or sender.is_bot:
        return None
    chat = message.chat
    if chat.type == Chat.CHANNEL:
        return None
    text = message.text or message.caption or ""
    if chat.type in _GROUP_TYPES:
        addressed, text = _addressed(message, text, me)
        if not addressed:
            return None
    target = _COMMAND_TARGET.match(text.strip())
    if target is not None and target.group(1).lower() != me.username.lower():
        return None  # "/help@other_bot"

    contact_phone: str | None = None
    if message.contact is not None:
        phone = normalise_phone(message.contact.phone_number)
        # Only the sender's own contact (the request-contact button) is a verified number;
        # someone else's card is read like a typed number.
        if message.contact.user_id == sender.id:
            contact_phone = phone or None
        text = text or phone
    attachments = _attachments(message)
    if not text.strip() and not attachments and contact_phone is None:
        return None  # service messages: pins, joins, payments and the like

    extra = {"message_id": str(message.message_id), "chat_type": str(chat.type)}
    edit_of: str | None = None
    if update.edited_message is not None:
        extra["edited"] = "1"
        edit_of = str(message.message_id)
    return Inbound(
        channel=CHANNEL,
        chat_key=str(chat.id),
        sender_id=str(sender.id),
        text=text,
        event_id=event_id,
        thread=_thread(message),
        sender_name=sender.full_name,
        command=parse_command(text),
        attachments=attachments,
        contact_phone=contact_phone,
        extra=extra,
        group=chat.type in _GROUP_TYPES,
        edit_of=edit_of,
    )


def is_group(chat_key: str) -> bool:
    """Telegram's group and channel ids are negative; people's chats are positive."""
    return chat_key.startswith("-")
