"""Log redaction, in both log formats: Indian mobile numbers go however a customer writes them;
timestamps, ids and other digit runs stay. And secrets stay out of reprs."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from adapters.telegram.channel import TelegramConfig
from bot.logging import configure_logging
from bot.settings import load_settings
from core import logcontext

FORMATS = ["text", "json"]

# (as written in a log message, the digits that must not survive)
PHONE_NUMBERS = [
    ("phone:9876543210", "9876543210"),
    ("tel:+91 98765 43210", "98765 43210"),
    ("tel:+919876543210", "9876543210"),
    ("+91-98765-43210", "98765-43210"),
    ("(+91) 98765 43210", "98765 43210"),
    ("0091 9876543210", "9876543210"),
    ("919876543210", "9876543210"),
    ("09876543210", "9876543210"),
    ("0 98765 43210", "98765 43210"),
    ("mobile 98765-43210", "98765-43210"),
    ("Mobile No.: 987 654 3210", "987 654 3210"),
    ("whatsapp me on 9876543210", "9876543210"),
    ("my number is 6543210987.", "6543210987"),
    ("call 9876543210,9123456780", "9123456780"),
    ("GET /lead?phone=%2B919876543210", "9876543210"),
    ("\u096f\u096e\u096d\u096c\u096b\u096a\u0969\u0968\u0967\u0966", "\u096f\u096e\u096d\u096c"),
    ("abroad +44 7911 123456", "7911 123456"),
]

# Digit runs that are not phone numbers, kept exactly as written.
NOT_PHONE_NUMBERS = [
    "chat -1001234567890",
    "group -9876543210",
    "update 9876543210",
    "update_id=9876543210",
    "chat_id: 9876543210",
    "sendMessage?chat_id=9876543210",
    "User(id=9876543210, is_bot=False)",
    "conversation telegram:9876543210",
    "ticket #9876543210",
    "98765432101",  # eleven digits, no 0 in front
    "987654321",  # nine
    "12345678901234",
    "9876543210123",
    "amount 2500000",
    "rate 9876543210.25",
    "from 96.123.245.16",
    "due 2025-06-07 19:56:12",
    "ref 6011 2233 4455 6677",  # sixteen digits in groups
]


def capture(log_format: str) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(load_settings(log_format=log_format), stream=stream)
    return stream


def message_of(stream: io.StringIO, log_format: str) -> str:
    out = stream.getvalue()
    if log_format == "json":
        return str(json.loads(out)["message"])
    return out


@pytest.mark.parametrize("log_format", FORMATS)
@pytest.mark.parametrize(("written", "digits"), PHONE_NUMBERS)
def test_phone_numbers_are_redacted_however_written(
    restore_root_logging: None, log_format: str, written: str, digits: str
) -> None:
    stream = capture(log_format)
    logging.getLogger("esoteric.test").warning("lead says %s", written)
    message = message_of(stream, log_format)
    assert digits not in message
    assert "[phone]" in message


@pytest.mark.parametrize("log_format", FORMATS)
@pytest.mark.parametrize("written", NOT_PHONE_NUMBERS)
def test_ids_and_other_numbers_are_kept(
    restore_root_logging: None, log_format: str, written: str
) -> None:
    stream = capture(log_format)
    logging.getLogger("esoteric.test").warning("seen %s", written)
    message = message_of(stream, log_format)
    assert written in message
    assert "[phone]" not in message


@pytest.mark.parametrize("log_format", FORMATS)
def test_a_phone_number_beside_an_id_still_goes(
    restore_root_logging: None, log_format: str
) -> None:
    stream = capture(log_format)
    logging.getLogger("esoteric.test").warning(
        "chat_id=9123456780 text='call me on 9876543210' update 9988776655"
    )
    message = message_of(stream, log_format)
    assert "9876543210" not in message
    assert "chat_id=9123456780" in message and "update 9988776655" in message


def test_text_lines_keep_their_timestamp(restore_root_logging: None) -> None:
    stream = capture("text")
    logging.getLogger("esoteric.test").warning("lead phone:9876543210")
    line = stream.getvalue()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING esoteric\.test: ", line), line
    assert "9876543210" not in line


def test_text_lines_keep_their_ids(restore_root_logging: None) -> None:
    stream = capture("text")
    request = logcontext.request_id.set("9876543210")
    conversation = logcontext.conversation_id.set("telegram:9876543210")
    try:
        logging.getLogger("esoteric.test").warning("lead 98765 43210")
    finally:
        logcontext.request_id.reset(request)
        logcontext.conversation_id.reset(conversation)
    line = stream.getvalue()
    assert "request_id=9876543210 conversation_id=telegram:9876543210]" in line
    assert "98765 43210" not in line


def test_json_id_fields_are_kept(restore_root_logging: None) -> None:
    stream = capture("json")
    ids = {
        "chat_id": 9876543210,
        "user_id": "9876543210",
        "update_id": 987654321,
        "message_id": "9876543210",
        "request_id": "9876543210",
        "conversation_id": "telegram:9876543210",
        "lead_id": "9876543210",
        "chatId": "9876543210",
    }
    logging.getLogger("esoteric.test").warning("turn", extra=ids)
    entry = json.loads(stream.getvalue())
    assert {key: entry[key] for key in ids} == ids


def test_json_phone_fields_and_timestamp(restore_root_logging: None) -> None:
    stream = capture("json")
    logging.getLogger("esoteric.test").warning(
        "lead", extra={"phone": 9876543210, "contact": "+91 98765 43210", "amount": 9876543210}
    )
    entry = json.loads(stream.getvalue())
    assert entry["phone"] == "[phone]" and entry["contact"] == "[phone]"
    assert entry["amount"] == 9876543210  # an integer under any other key is not a phone
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["ts"])


def test_telegram_config_repr_hides_its_secrets() -> None:
    config = TelegramConfig(
        "123456:AAE-token-that-must-not-leak",
        webhook_url="https://bot.example.com/telegram/webhook",
        webhook_secret="webhook-secret-that-must-not-leak",
    )
    shown = repr(config)
    assert "token-that-must-not-leak" not in shown
    assert "webhook-secret-that-must-not-leak" not in shown
    assert "https://bot.example.com/telegram/webhook" in shown
