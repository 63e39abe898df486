"""python-telegram-bot's HTTP transport on aiohttp instead of httpx.

PTB's default transport spends most of a bot's CPU in httpx and httpcore: with several replies
in flight, httpcore checks every pooled connection's socket on every request, and its anyio
locks and cancel scopes cost more than the request itself. aiohttp (already Esoteric's HTTP
client for Slack and the stand-ins) keeps idle connections in a per-host stack and parses
responses in C, which roughly halves the CPU each Telegram reply costs. PTB supports swapping
the transport through ``telegram.request.BaseRequest``; everything above it (retries,
``RetryAfter``, error types, the bot's methods) stays PTB's own.
"""

from __future__ import annotations

import json

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

_JSON = {"Content-Type": "application/json"}


def _sum(*parts: float | None) -> float | None:
    """The total of several timeouts; no bound if any part has none."""
    if any(part is None for part in parts):
        return None
    return sum(part for part in parts if part is not None)


class AiohttpRequest(BaseRequest):
    """A ``BaseRequest`` backed by one ``aiohttp.ClientSession``.

    Timeouts mean what they mean for PTB's ``HTTPXRequest``: ``pool`` + ``connect`` bound getting
    a connection, ``read`` bounds each wait for response bytes. aiohttp has no per-write timeout,
    so ``write`` bounds the whole request together with the others.
    """

    __slots__ = (
        "_connections",
        "_default_timeout",
        "_defaults",
        "_media_write_timeout",
        "_session",
    )

    def __init__(
        self,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        if connection_pool_size < 1:
            raise ValueError("connection_pool_size must be at least 1")
        self._connections = connection_pool_size
        self._defaults = {
            "read": read_timeout,
            "write": write_timeout,
            "connect": connect_timeout,
            "pool": pool_timeout,
        }
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        # Nearly every call leaves all four timeouts at their defaults: built once.
        self._default_timeout = self._build_timeout(
            read_timeout, write_timeout, connect_timeout, pool_timeout
        )

    @property
    def read_timeout(self) -> float | None:
        return self._defaults["read"]

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                headers={"User-Agent": self.USER_AGENT},
                # Telegram's answers are JSON bodies PTB parses itself; no cookies are involved.
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def _timeout(
        self,
        read: ODVInput[float],
        write: ODVInput[float],
        connect: ODVInput[float],
        pool: ODVInput[float],
        has_files: bool,
    ) -> aiohttp.ClientTimeout:
        def pick(value: ODVInput[float], name: str) -> float | None:
            if isinstance(value, DefaultValue):
                if name == "write" and has_files:
                    return self._media_write_timeout
                return self._defaults[name]
            return value

        if not has_files and all(
            isinstance(value, DefaultValue) for value in (read, write, connect, pool)
        ):
            return self._default_timeout
        return self._build_timeout(
            pick(read, "read"), pick(write, "write"), pick(connect, "connect"), pick(pool, "pool")
        )

    @staticmethod
    def _build_timeout(
        read_s: float | None, write_s: float | None, connect_s: float | None, pool_s: float | None
    ) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=_sum(pool_s, connect_s, write_s, read_s),
            connect=_sum(pool_s, connect_s),
            sock_connect=connect_s,
            sock_read=read_s,
        )

    def _body(self, request_data: RequestData | None) -> aiohttp.FormData | bytes | None:
        if request_data is None:
            return None
        if not request_data.contains_files:
            # A JSON body (the Bot API takes one for any call without files): one C-encoded
            # dump, where a form encodes each nested value as JSON and then percent-escapes
            # every character of the text (eight times the CPU for a reply).
            return json.dumps(request_data.parameters).encode()
        fields = request_data.json_parameters
        files = request_data.multipart_data
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        for name, (filename, content, mime_type) in files.items():
            form.add_field(name, content, filename=filename, content_type=mime_type)
        return form

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        has_files = bool(request_data and request_data.contains_files)
        timeout = self._timeout(
            read_timeout, write_timeout, connect_timeout, pool_timeout, has_files
        )
        try:
            body = self._body(request_data)
            headers = _JSON if isinstance(body, bytes) else None
            async with session.request(
                method, url, data=body, headers=headers, timeout=timeout
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc
