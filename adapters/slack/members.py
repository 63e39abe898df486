"""Who is in a Slack channel (the sales channel), from ``conversations.members``.

The whole member list is read, page by page (Slack's cursor pagination), and kept for a short
while, so a busy desk costs a few Web API calls a minute rather than one per command. A member
who just joined or left is seen within that time. When Slack cannot be asked, nobody is
assumed to be a member: callers refuse (fail closed) and say to try again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from core.errors import ChannelError

log = logging.getLogger(__name__)

PAGE_SIZE = 200  # Slack recommends no more than 200 results a page
MAX_PAGES = 500  # 100,000 members: a cursor that never ends is Slack's bug, not a reason to spin


class MembersUnknown(ChannelError):
    """Slack did not say who is in the channel (unreachable, an error, a missing scope)."""


class ChannelMembers:
    """The members of one channel, cached for ``ttl`` seconds in this process."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        ttl: float = 60.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.channel = channel
        self.ttl = ttl
        # Listeners that check membership run before Slack's 3-second acknowledgement.
        self.timeout = timeout
        self._clock = clock
        self._members: frozenset[str] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def contains(self, user: str) -> bool:
        """Whether ``user`` is in the channel. Raises ``MembersUnknown`` when Slack cannot
        tell."""
        return user in await self.members()

    async def members(self) -> frozenset[str]:
        if (cached := self._fresh()) is not None:
            return cached
        # One lookup at a time: commands arriving together share its answer.
        async with self._lock:
            if (cached := self._fresh()) is not None:
                return cached
            try:
                async with asyncio.timeout(self.timeout):
                    members = await self._fetch()
            except TimeoutError as exc:
                raise MembersUnknown(
                    f"conversations.members for {self.channel} took over {self.timeout:g}s"
                ) from exc
            self._members, self._fetched_at = members, self._clock()
            return members

    def _fresh(self) -> frozenset[str] | None:
        if self._members is not None and self._clock() - self._fetched_at < self.ttl:
            return self._members
        return None

    async def _fetch(self) -> frozenset[str]:
        members: set[str] = set()
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            try:
                page = await self.client.conversations_members(
                    channel=self.channel, limit=PAGE_SIZE, cursor=cursor
                )
            except SlackApiError as exc:
                error = exc.response.get("error")
                log.warning("conversations.members refused for %s: %s", self.channel, error)
                raise MembersUnknown(f"Slack refused conversations.members: {error}") from exc
            except (SlackClientError, aiohttp.ClientError, OSError) as exc:
                # The SDK lets connection errors through as they are.
                raise MembersUnknown(f"conversations.members failed: {exc!r}") from exc
            members.update(str(m) for m in page.get("members") or [])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if cursor is None:
                return frozenset(members)
        raise MembersUnknown(f"conversations.members for {self.channel} did not end")

    def forget(self) -> None:
        """Read the list again on the next check."""
        self._members = None
