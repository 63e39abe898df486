"""The outbound port: what the core asks of a channel when it speaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from core.messages import Reply, Target


@runtime_checkable
class OutboundPort(Protocol):
    """Implemented by each channel. Optional features (buttons, streaming) degrade to text.

    A channel whose clients read replies from the store sets ``delivered_when_stored = True``:
    its replies are stored as sent, and a failed ``send`` is logged, not recorded."""

    async def send(self, target: Target, reply: Reply) -> None:
        """Deliver a whole reply, splitting it to fit the platform if needed."""

    async def typing(self, target: Target) -> None:
        """Show that the bot is working on an answer; best effort."""


class ReplyStream(Protocol):
    """A reply being written: iterate for text deltas, then ``final()`` for the whole reply.

    The final text is authoritative: it may differ from the concatenated deltas (a fallback
    after a failed stream, a compliance correction), and it carries choices and citations."""

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def final(self) -> Reply: ...


@runtime_checkable
class StreamingPort(Protocol):
    """Channels that can show a reply while it is written (send then edit, post then update,
    WebSocket frames). The core falls back to ``send`` for channels without it."""

    async def stream(self, target: Target, reply: ReplyStream) -> None:
        """Render the deltas progressively (paced within platform limits), then make the
        delivered message(s) exactly ``await reply.final()``, splitting if needed."""
