"""Telegram's sample updates into the core's Inbound."""

from __future__ import annotations

from typing import Any

import pytest
from telegram import Update

from adapters.telegram.normalise import BotIdentity, normalise, normalise_phone
from adapters.telegram.render import CallbackCodec
from core.messages import Attachment, Command
from tests.support.telegram_server import contact_update, message_update, payload

ME = BotIdentity(7012345678, "anchor_test_bot")


def inbound(data: dict[str, Any], codec: CallbackCodec | None = None) -> Any:
    return normalise(Update.de_json(data, None), ME, (codec or CallbackCodec()).decode)


def test_private_text() -> None:
    got = inbound(payload("update_private_text.json"))
    assert (got.channel, got.chat_key, got.sender_id) == ("telegram", "123456789", "123456789")
    assert got.event_id == "815230001"
    assert got.text == "Hi! Can you summarise today's standup notes?"
    assert got.sender_name == "Alice Example"
    assert got.command is None and got.thread == ""


def test_start_command_with_a_deep_link_argument() -> None:
    got = inbound(payload("update_start_command.json"))
    assert got.command == Command("start", ("ref_abc123",))


def test_callback_data_becomes_the_text() -> None:
    got = inbound(payload("update_callback_query.json"))
    assert got.text == "feedback:up:msg43"
    assert got.event_id == "815230003" and got.chat_key == "123456789"
    assert got.extra["callback"] == "1"


def test_a_long_choice_value_travels_as_a_short_key() -> None:
    codec = CallbackCodec()
    value = "I would like to compare a home loan of 75 lakh over 25 years with a car loan"
    data = codec.encode(value)
    assert len(data.encode()) <= 64 and data != value
    update = payload("update_callback_query.json")
    update["callback_query"]["data"] = data
    assert inbound(update, codec).text == value
    assert inbound(update, CallbackCodec()) is None  # forgotten after a restart: asked to type


def test_group_mention_is_addressed_and_stripped() -> None:
    got = inbound(payload("update_group_mention.json"))
    assert got.chat_key == "-1001234567890" and got.sender_id == "223344556"
    assert got.text == "what's the deploy status?"
    assert got.extra["message_id"] == "9876"


def test_group_reply_to_the_bot_is_addressed() -> None:
    got = inbound(payload("update_group_reply_to_bot.json"))
    assert got.text == "and staging?"


def test_group_chatter_is_not_for_the_bot() -> None:
    update = payload("update_group_reply_to_bot.json")
    update["message"]["reply_to_message"]["from"] = {"id": 1, "is_bot": False, "first_name": "X"}
    assert inbound(update) is None


def test_a_command_for_another_bot_is_ignored() -> None:
    assert inbound(message_update(5, -100200, "/help@other_bot", from_id=9)) is None
    assert inbound(message_update(6, -100200, "/help@anchor_test_bot", from_id=9)) is not None
    assert inbound(message_update(7, 42, "/help@other_bot")) is None


def test_an_edit_is_a_new_message_with_its_own_event() -> None:
    got = inbound(payload("update_edited_message.json"))
    assert got.event_id == "815230004"
    assert got.text == "Hi! Can you summarise yesterday's standup notes?"
    assert got.extra["edited"] == "1"


@pytest.mark.parametrize(
    ("sample", "kind", "text"),
    [
        ("update_photo_caption.json", "photo", "What does this error mean?"),
        ("update_document.json", "document", ""),
        ("update_voice.json", "voice", ""),
    ],
)
def test_attachments(sample: str, kind: str, text: str) -> None:
    got = inbound(payload(sample))
    assert got.attachments[0].kind == kind and got.text == text


def test_document_keeps_its_name() -> None:
    got = inbound(payload("update_document.json"))
    assert got.attachments == (Attachment("document", "q3-report.pdf"),)


def test_own_contact_is_a_verified_phone() -> None:
    got = inbound(contact_update(8, 42, "919876543210"))
    assert got.contact_phone == "+919876543210" and got.text == "+919876543210"


def test_someone_elses_contact_is_only_text() -> None:
    update = contact_update(9, 42, "+91 98765 43210")
    update["message"]["contact"]["user_id"] = 777
    got = inbound(update)
    assert got.contact_phone is None and got.text == "+919876543210"


def from_bot() -> dict[str, Any]:
    update = message_update(13, 42, "hi")
    update["message"]["from"] = {"id": 5, "is_bot": True, "first_name": "B"}
    return update


@pytest.mark.parametrize(
    "update",
    [
        {"update_id": 10},
        {"update_id": 11, "channel_post": payload("update_private_text.json")["message"]},
        message_update(12, 42, None, pinned_message=None, new_chat_title="Loans"),
        from_bot(),
    ],
    ids=["empty", "channel-post", "service-message", "from-a-bot"],
)
def test_updates_without_a_customer_message(update: dict[str, Any]) -> None:
    assert inbound(update) is None


def test_phone_normalisation() -> None:
    assert normalise_phone("+91 98765-43210") == "+919876543210"
    assert normalise_phone("919876543210") == "+919876543210"
    assert normalise_phone("none") == ""
