"""A channel for core tests: it records what the core sends, as a platform would receive it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from core.messages import Reply, Target


@dataclass
class RecordingPort:
    sent: list[tuple[Target, Reply]] = field(default_factory=list)
    typing_count: int = 0
    fail_next: int = 0
    delay: float = 0.0
    # When set, send() waits for it: a turn held mid-delivery, to observe queueing.
    gate: asyncio.Event | None = None

    async def send(self, target: Target, reply: Reply) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("platform unreachable")
        self.sent.append((target, reply))

    async def typing(self, target: Target) -> None:
        self.typing_count += 1

    @property
    def texts(self) -> list[str]:
        return [reply.text for _, reply in self.sent]
