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
# Ten to thirteen digits, optionally with + and single spaces or hyphens between them.
_PHONE = re.compile(r"(?<![\w/.:-])\+?\d(?:[ -]?\d){9,12}(?![\w/-])")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "conversation_id",
}


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is removed whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
        return _PHONE.sub(PHONE_REDACTED, text)


class ContextFilter(logging.Filter):
    """Adds the current request and conversation ids to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = logcontext.request_id.get()
        record.conversation_id = logcontext.conversation_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{name}={value}"
            for name in ("request_id", "conversation_id")
            if (value := getattr(record, name, None))
        ]
        if ids:
            first, _, rest = line.partition("\n")
            line = f"{first} [{' '.join(ids)}]" + (f"\n{rest}" if rest else "")
        return self.redact(line)


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
            "request_id": getattr(record, "request_id", None),
            "conversation_id": getattr(record, "conversation_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = self._clean(value)
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(json.dumps(value, default=str, ensure_ascii=False))


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
