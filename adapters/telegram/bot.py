"""The Bot API client: python-telegram-bot's ``ExtBot``, tolerant of one unparseable update.

PTB parses a ``getUpdates`` batch all at once; if one update fails to parse (a field a newer Bot
API made required, say), the whole batch is dropped without confirming its offset and fetched
again, for ever, and the bot goes deaf. Here, only when that happens, the batch is parsed update
by update and a bad one is replaced by an empty update with the same id, so polling moves past it
and the handler ignores it.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ExtBot

log = logging.getLogger(__name__)


class TolerantBot(ExtBot[None]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with self._unfrozen():
            # The raw JSON of the last getUpdates batch (updates are fetched one call at a time).
            self._last_batch: list[Any] = []

    async def _post(self, endpoint: str, data: Any = None, **kwargs: Any) -> Any:
        result = await super()._post(endpoint, data, **kwargs)
        if endpoint == "getUpdates" and isinstance(result, list):
            self._last_batch[:] = result
        return result

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        try:
            return await super().get_updates(*args, **kwargs)
        except TelegramError:
            raise
        except Exception:  # whatever PTB's parsing raised; recovered update by update below
            return tuple(self._parse_one(item) for item in self._last_batch)

    def _parse_one(self, item: Any) -> Update:
        try:
            return Update.de_json(dict(item), self)
        except Exception as exc:  # one bad update is skipped, not fatal
            update_id = item.get("update_id") if isinstance(item, dict) else None
            log.error("skipping Telegram update %s that could not be parsed: %s", update_id, exc)
            return Update(update_id if isinstance(update_id, int) else 0)
