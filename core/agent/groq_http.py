"""The groq SDK's aiohttp-based HTTP client, without a reference cycle per request."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx
from groq import DefaultAioHttpClient

# What a response's stream becomes once its body has been read or closed.
_SPENT = httpx.ByteStream(b"")


class _Unbinding(httpx.AsyncByteStream):
    """A response's body stream that lets go of the response once closed."""

    def __init__(self, stream: httpx.AsyncByteStream, response: httpx.Response) -> None:
        self._stream = stream
        self._response = weakref.ref(response)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            response = self._response()
            if response is not None:
                response.stream = _SPENT


class GroqHttpClient(DefaultAioHttpClient):
    """The SDK's own aiohttp client, with one change: httpx binds each response's body stream to
    the response (``BoundAsyncStream``), a reference cycle that only the garbage collector
    frees, so each model request's headers, JSON body and aiohttp response stayed in memory
    until a collection of the older generations (about 3 MiB of them after a Telegram burst of
    500 model requests). The link is cut as soon as the body is read or its stream closed."""

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = await super().send(request, **kwargs)
        if response.is_closed:
            response.stream = _SPENT  # read whole already
        else:
            response.stream = _Unbinding(response.stream, response)  # type: ignore[arg-type]
        return response
