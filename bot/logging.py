"""Structured logs: text or JSON lines on stderr, each carrying the request and conversation ids,
with secrets and phone numbers redacted before anything is written."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from bot.settings import Settings
from core import logcontext

REDACTED = "[redacted]"
PHONE_REDACTED = "[phone]"

# Credentials by shape, for any that reach a log line without being configured here.
_TOKEN_PATTERNS = (
    re.compile(r"\b\d{6,12}:[A-Za-z0-9_-]{30,}\b"),  # Telegram bot token
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),  # Slack tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]{10,}\b"),  # Slack app-level token
    re.compile(r"\bgsk_[A-Za-z0-9]{16,}\b"),  # Groq key
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|password|secret|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
)

# Phone numbers, as customers type them. Between digits: nothing, a space or a hyphen (with
# spaces around it). Dots are not separators: they would turn IP addresses into phone numbers.
_SEP = r"(?:[ \u00a0]?-[ \u00a0]?|[ \u00a0])?"
_PLUS = r"(?:\+|%2[Bb])"  # %2B: a + in a logged URL
_PHONE = re.compile(
    # Not inside a word, a longer number, a path or a decimal.
    r"(?<![\w/.+])(?:"
    # An Indian mobile: ten digits from 6-9 (Devanagari digits too), optionally after +91,
    # 0091, (+91), 91 or the trunk 0.
    rf"(?:(?:{_PLUS}[ \u00a0]?|00|\({_PLUS}?)?[9\u096f][1\u0967]\)?{_SEP}|0{_SEP})?"
    rf"[6-9\u096c-\u096f](?:{_SEP}\d){{9}}"
    # Any international number written with its + (8 to 15 digits): ids never carry a +.
    rf"|{_PLUS}\d(?:{_SEP}\d){{7,14}}"
    r")(?![\w/]|\.\d)"
)
# A bare run of digits is ambiguous: a Telegram user or chat id is often ten digits from 6-9
# too. Such a run is a phone number unless what comes right before it says it is an id: one of
# these words (or one ending in _id, or id itself), a '#', or a minus sign. Written any other
# way (a +, a 91 or 0 prefix with spaces, spaces or hyphens inside) it is always a phone number:
# ids are never written like that.
_ID_WORDS = frozenset(
    {"id", "ids", "chat", "chatid", "user", "userid", "uid", "sender", "update", "offset"}
    | {"telegram", "tg"}  # conversation keys: telegram:123456789
)
_LAST_WORD = re.compile(r"([^\W\d]\w*)[\s:=\"'(\[{,]{0,4}$")
# Keys of structured fields holding phone numbers even as plain integers.
_PHONE_KEYS = ("phone", "mobile", "msisdn", "whatsapp", "telephone")


def _is_id_key(key: str) -> bool:
    """``chat_id``, ``update_id``, ``request_id``, ``chatId``, ``id``, ...: ids, never phones."""
    lowered = key.lower()
    return (
        lowered in _ID_WORDS
        or lowered.endswith(("_id", "_ids"))
        or key.endswith(("Id", "ID", "Ids", "IDs"))
    )


def _phone_or_id(match: re.Match[str], lead: str) -> str:
    number = match.group()
    if not number.isdigit():
        return PHONE_REDACTED  # a +, brackets, spaces or hyphens: written as a phone number
    before = match.string[max(0, match.start() - 40) : match.start()]
    if lead:
        before = f"{lead}={before}"
    if before.endswith("#"):
        return number
    if before.endswith("-") and not before[-2:-1].isalnum():
        return number  # a minus sign: a signed id (Telegram groups' chat ids are negative)
    word = _LAST_WORD.search(before)
    if word is not None and _is_id_key(word.group(1)):
        return number
    return PHONE_REDACTED


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "conversation_id",
}


class Redactor:
    """Removes secrets (configured values, and credentials by shape) and phone numbers."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is removed whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str, lead: str = "") -> str:
        """``lead``: what the text is the value of (a field's key), read as the words before it."""
        return self.phones(self.secret_free(text), lead)

    def secret_free(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
        return text

    @staticmethod
    def phones(text: str, lead: str = "") -> str:
        return _PHONE.sub(lambda m: _phone_or_id(m, lead), text)

    def field(self, key: str, value: Any) -> Any:
        """A structured field's value: ids keep their digits (secrets still go), phone-like
        keys lose even an integer, other integers stay (amounts are not phone numbers)."""
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return value
        if isinstance(value, int):
            if any(word in key.lower() for word in _PHONE_KEYS) and _PHONE.fullmatch(str(value)):
                return PHONE_REDACTED
            return value
        if isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, default=str, ensure_ascii=False)
        if _is_id_key(key):
            return self.secret_free(text)
        return self(text, lead=key)


class ContextFilter(logging.Filter):
    """Adds the current request and conversation ids to every record that has none of its
    own (a record's explicit ``extra`` ids win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = logcontext.request_id.get()
        if getattr(record, "conversation_id", None) is None:
            record.conversation_id = logcontext.conversation_id.get()
        return True


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE [request_id=.. conversation_id=..]``. Only the message,
    exception and stack are redacted: the formatter's own timestamp and the ids are added after
    (ids lose secrets only, never digits)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        first, _, rest = self.redact(record.message).partition("\n")
        ids = [
            f"{name}={self.redact.secret_free(str(value))}"
            for name in ("request_id", "conversation_id")
            if (value := getattr(record, name, None))
        ]
        if ids:
            first = f"{first} [{' '.join(ids)}]"
        lines = [f"{record.asctime} {record.levelname} {record.name}: {first}"]
        if rest:
            lines.append(rest)
        # Formatted here, not taken from record.exc_text: another handler may have cached it
        # unredacted.
        if record.exc_info:
            lines.append(self.redact(self.formatException(record.exc_info)))
        elif record.exc_text:
            lines.append(self.redact(record.exc_text))
        if record.stack_info:
            lines.append(self.redact(self.formatStack(record.stack_info)))
        return "\n".join(lines)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, ids, extras, and the exception."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
            "request_id": self.redact.field("request_id", getattr(record, "request_id", None)),
            "conversation_id": self.redact.field(
                "conversation_id", getattr(record, "conversation_id", None)
            ),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = self.redact.field(key, value)
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def secrets_of(settings: Settings) -> list[str]:
    values = [key.get_secret_value() for key in settings.api_keys]
    for name in (
        "groq_api_key",
        "telegram_bot_token",
        "telegram_webhook_secret",
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "database_url",
    ):
        secret = getattr(settings, name, None)
        if secret is not None:
            value = secret.get_secret_value()
            if name == "database_url":
                # Only the password part of a URL is secret.
                from sqlalchemy.engine import make_url

                value = make_url(value).password or ""
            values.append(str(value))
    return values


def configure_logging(
    settings: Settings, quiet: bool = False, stream: TextIO | None = None
) -> None:
    """Install the one handler on the root logger (replacing earlier ones)."""
    level = logging.WARNING if quiet else getattr(logging, settings.log_level.upper(), logging.INFO)
    redact = Redactor(secrets_of(settings))
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter(redact) if settings.log_format == "json" else TextFormatter(redact)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter stays quiet unless something is wrong.
    for noisy in ("apscheduler", "httpx", "alembic", "uvicorn.access", "procrastinate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
