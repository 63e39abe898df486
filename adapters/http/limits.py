"""The API's rate limits: per key, and for the public web-chat key also per chat session and per
client address.

The web-chat key is embedded in the chat page, so every visitor shares it and anyone can copy it.
One budget for all of them would let a single script (or a busy afternoon) lock every visitor
out, so that key gets a large budget of its own, and each visitor is held to what a person
typing needs: a limit per session on chat messages, and a limit per client address on every
request. Other keys belong to one integration each and keep their one per-key limit.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from core.ratelimit import RateLimits

from .security import key_hash

# Limits' namespaces (the Redis key reads "<prefix>:ratelimit:<scope>/<key>/<per_minute>/...").
KEY_SCOPE = "api-key"
SESSION_SCOPE = "web-session"
ADDRESS_SCOPE = "web-address"


@dataclass(frozen=True)
class Limited:
    """A refused request: which limit (``key``, ``session`` or ``address``), its size, and the
    whole seconds to wait."""

    limit: str
    per_minute: int
    retry_after: int

    @property
    def detail(self) -> str:
        what = {
            "key": "requests a minute for this API key",
            "session": "messages a minute for this chat session",
            "address": "requests a minute from your address",
        }[self.limit]
        return (
            f"rate limit of {self.per_minute} {what} reached ({self.limit} limit); "
            f"retry in {self.retry_after} s"
        )


def client_address(host: str | None) -> str:
    """What the address limit counts by: the client's IP (set by uvicorn from X-Forwarded-For
    when the proxy in front is trusted). An IPv6 client usually holds a whole /64, so that is
    one address here."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class WebLimits:
    """The limits each request and message of the API spends, on ``RateLimits`` (shared by every
    process through Redis when it is set). Per-visitor limits are taken before the key's
    shared budget, so a visitor refused for their own excess does not spend everyone's."""

    def __init__(
        self,
        limits: RateLimits,
        *,
        key_per_minute: int,
        page_key: str | None = None,
        page_key_per_minute: int = 600,
        session_per_minute: int = 20,
        address_per_minute: int = 60,
    ) -> None:
        self.limits = limits
        self.key_per_minute = key_per_minute
        self.page_owner = key_hash(page_key) if page_key else None
        self.page_key_per_minute = page_key_per_minute
        self.session_per_minute = session_per_minute
        self.address_per_minute = address_per_minute

    def is_page_key(self, owner: str) -> bool:
        return self.page_owner is not None and owner == self.page_owner

    async def request(self, owner: str, host: str | None) -> Limited | None:
        """A REST request (session creation included)."""
        if self.is_page_key(owner):
            return await self._address(host) or await self._key(owner)
        return await self._key(owner)

    async def connection(self, owner: str, host: str | None) -> Limited | None:
        """A WebSocket being opened: for the web-chat key, a request of its address (its
        messages are counted as they come)."""
        if self.is_page_key(owner):
            return await self._address(host)
        return None

    async def socket_message(self, owner: str, host: str | None, session_id: str) -> Limited | None:
        """A chat message over a WebSocket: a request of its address and key, and a message of
        its session."""
        if self.is_page_key(owner):
            return (
                await self._address(host)
                or await self._session(session_id)
                or await self._key(owner)
            )
        return await self._key(owner)

    async def rest_message(self, owner: str, session_id: str) -> Limited | None:
        """A chat message over REST, whose request ``request`` has already counted: the
        session's limit, for the web-chat key."""
        if self.is_page_key(owner):
            return await self._session(session_id)
        return None

    async def _key(self, owner: str) -> Limited | None:
        per_minute = self.page_key_per_minute if self.is_page_key(owner) else self.key_per_minute
        return await self._take("key", KEY_SCOPE, owner, per_minute)

    async def _session(self, session_id: str) -> Limited | None:
        # Hashed: a session id is as good as a password, and Redis keys are listed freely.
        hashed = hashlib.sha256(session_id.encode()).hexdigest()[:32]
        return await self._take("session", SESSION_SCOPE, hashed, self.session_per_minute)

    async def _address(self, host: str | None) -> Limited | None:
        address = client_address(host)
        return await self._take("address", ADDRESS_SCOPE, address, self.address_per_minute)

    async def _take(self, limit: str, scope: str, key: str, per_minute: int) -> Limited | None:
        wait = await self.limits.take(scope, key, per_minute)
        return Limited(limit, per_minute, wait) if wait else None
