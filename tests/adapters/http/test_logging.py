"""Structured logs: JSON lines with the request and conversation ids; secrets and phone numbers
never written."""

from __future__ import annotations

import io
import json
import logging

import pytest

from bot.logging import configure_logging
from bot.settings import load_settings
from core import logcontext

API_KEY = "api-key-that-must-not-leak"
SLACK_TOKEN = "xoxb-1234567890-abcdefghijkl"


def capture(log_format: str) -> io.StringIO:
    stream = io.StringIO()
    settings = load_settings(api_keys=API_KEY, log_format=log_format, SLACK_BOT_TOKEN=SLACK_TOKEN)
    configure_logging(settings, stream=stream)
    return stream


def test_json_lines_carry_ids_and_extras(restore_root_logging: None) -> None:
    stream = capture("json")
    request = logcontext.request_id.set("req-42")
    conversation = logcontext.conversation_id.set("web:abc123")
    try:
        logging.getLogger("esoteric.test").warning(
            "turn for %s", "asha", extra={"channel": "web", "message_id": 7}
        )
    finally:
        logcontext.request_id.reset(request)
        logcontext.conversation_id.reset(conversation)
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "turn for asha"
    assert entry["level"] == "warning" and entry["logger"] == "esoteric.test"
    assert entry["request_id"] == "req-42" and entry["conversation_id"] == "web:abc123"
    assert entry["channel"] == "web" and entry["message_id"] == 7


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secrets_and_phone_numbers_are_redacted(
    restore_root_logging: None, log_format: str
) -> None:
    stream = capture(log_format)
    log = logging.getLogger("esoteric.test")
    log.info("key %s token %s", API_KEY, SLACK_TOKEN)
    log.info("lead phone +91 98111 22334 and 9811122334, amount 2500000, chat -1001234")
    log.info("bot token 123456789:AAE-abcdefghijklmnopqrstuvwxyz0123456 in a URL")
    log.info("header Authorization: Bearer sk-live-abcdefgh12345678")
    try:
        raise ValueError(f"bad key {API_KEY}")
    except ValueError:
        log.exception("failed")
    out = stream.getvalue()
    for secret in (
        API_KEY,
        SLACK_TOKEN,
        "98111 22334",
        "9811122334",
        "AAE-abcdefghijklmnopqrstuvwxyz0123456",
        "sk-live-abcdefgh12345678",
    ):
        assert secret not in out
    assert "[redacted]" in out and "[phone]" in out
    # Amounts and chat ids are not phone numbers.
    assert "2500000" in out and "-1001234" in out


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_an_exception_formatted_elsewhere_first_is_still_redacted(
    restore_root_logging: None, log_format: str
) -> None:
    """Another handler (pytest's, Sentry's) may format the record first and cache its
    traceback unredacted on it: ours formats its own."""
    stream = capture(log_format)
    logging.getLogger().handlers.insert(0, logging.StreamHandler(io.StringIO()))
    try:
        raise ValueError(f"bad key {API_KEY} for tel:+91 98765 43210")
    except ValueError:
        logging.getLogger("esoteric.test").exception("failed")
    out = stream.getvalue()
    assert API_KEY not in out and "98765 43210" not in out
    assert "[redacted]" in out and "[phone]" in out


def test_an_explicit_conversation_id_wins_over_the_context(restore_root_logging: None) -> None:
    stream = capture("json")
    conversation = logcontext.conversation_id.set("web:other")
    try:
        logging.getLogger("esoteric.test").warning("delivered", extra={"conversation_id": 42})
    finally:
        logcontext.conversation_id.reset(conversation)
    assert json.loads(stream.getvalue())["conversation_id"] == 42
