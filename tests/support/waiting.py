"""Waiting for a condition in tests without timing assertions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(
    condition: Callable[[], bool], limit: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until true; fail clearly after ``limit`` seconds (a hang, not a
    speed check)."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - the state lives in code we only observe
            await asyncio.sleep(0.005)
    assert condition(), what
