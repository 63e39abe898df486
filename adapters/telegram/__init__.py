"""The Telegram channel (python-telegram-bot 22)."""

from __future__ import annotations

from adapters.telegram.channel import WEBHOOK_PATH, TelegramChannel, TelegramConfig

__all__ = ["WEBHOOK_PATH", "TelegramChannel", "TelegramConfig"]
