"""The outbound port: what the core asks of a channel when it speaks."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from core.messages import Reply, Target


@runtime_checkable
class OutboundPort(Protocol):
    """Implemented by each channel. Optional features (buttons, streaming) degrade to text."""

    async def send(self, target: Target, reply: Reply) -> None:
        """Deliver a whole reply, splitting it to fit the platform if needed."""

    async def typing(self, target: Target) -> None:
        """Show that the bot is working on an answer; best effort."""
