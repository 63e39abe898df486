"""Ids that log records carry: the request being served and the conversation being answered.

Adapters set them; the logging setup in ``bot`` adds them to every record. Context variables
follow each task, so concurrent requests never mix their ids."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("esoteric_request_id", default=None)
conversation_id: ContextVar[str | None] = ContextVar("esoteric_conversation_id", default=None)
