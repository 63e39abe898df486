"""The Bot API client: python-telegram-bot's ``ExtBot``, tolerant of one unparseable update, and
able to hold the next long poll until the last batch is stored.

PTB parses a ``getUpdates`` batch all at once; if one update fails to parse (a field a newer Bot
API made required, say), the whole batch is dropped without confirming its offset and fetched
again, for ever, and the bot goes deaf. Here, only when that happens, the batch is parsed update
by update and a bad one is replaced by an empty update with the same id, so polling moves past it
and the handler ignores it.

A ``getUpdates`` call with a new offset is what confirms the earlier updates to Telegram, which
then forgets them. PTB's updater polls again as soon as it has queued a batch, before the bot
has stored anything; ``hold_polls`` lets the channel make each poll wait until every update of
the previous batch has been stored, so a crash can no longer lose a confirmed update.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
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
            self._before_poll: Callable[[], Awaitable[None]] | None = None
            self._after_poll: Callable[[Sequence[Update]], None] | None = None

    def hold_polls(
        self, before: Callable[[], Awaitable[None]], after: Callable[[Sequence[Update]], None]
    ) -> None:
        """``before`` is awaited ahead of every ``getUpdates``; ``after`` gets each batch."""
        with self._unfrozen():
            self._before_poll, self._after_poll = before, after

    async def post_json(self, endpoint: str, params: dict[str, Any]) -> Any:
        """One Bot API call answered as plain JSON: PTB's own request path (its timeouts and
        error types) without building telegram objects from the answer. Parsing a sent
        ``Message`` with its chat and sender costs more than the rest of the call, and a
        reply needs only its ``message_id``."""
        return await self._post(endpoint, params)

    async def _post(self, endpoint: str, data: Any = None, **kwargs: Any) -> Any:
        result = await super()._post(endpoint, data, **kwargs)
        if endpoint == "getUpdates" and isinstance(result, list):
            self._last_batch[:] = result
        return result

    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        if self._before_poll is not None:
            await self._before_poll()
        try:
            updates = await super().get_updates(*args, **kwargs)
        except TelegramError:
            raise
        except Exception:  # whatever PTB's parsing raised; recovered update by update below
            updates = tuple(self._parse_one(item) for item in self._last_batch)
        if self._after_poll is not None:
            self._after_poll(updates)
        return updates

    def _parse_one(self, item: Any) -> Update:
        try:
            return Update.de_json(dict(item), self)
        except Exception as exc:  # one bad update is skipped, not fatal
            update_id = item.get("update_id") if isinstance(item, dict) else None
            log.error("skipping Telegram update %s that could not be parsed: %s", update_id, exc)
            return Update(update_id if isinstance(update_id, int) else 0)
