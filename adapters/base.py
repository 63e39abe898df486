"""What the composition root needs from a channel adapter: a lifecycle, optional HTTP routes,
and a readiness check."""

from __future__ import annotations

from typing import Any, Protocol

from core.ports import OutboundPort


class ChannelAdapter(OutboundPort, Protocol):
    """A channel: it receives (webhooks, polling, sockets) and is the core's outbound port."""

    name: str

    async def start(self) -> None:
        """Connect and begin receiving (polling, socket, or just be ready for webhooks)."""

    async def stop(self) -> None:
        """Stop receiving, let in-flight work finish, release connections."""

    def router(self) -> Any | None:
        """A FastAPI ``APIRouter`` for webhook routes, or ``None``."""

    async def check(self) -> tuple[bool, str]:
        """Whether the channel is usable right now, with a short reason for /ready."""
