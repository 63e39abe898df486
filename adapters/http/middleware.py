"""ASGI middleware for the whole app: a request id on every request and a body size limit."""

from __future__ import annotations

import itertools
import json
import re
import secrets
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logcontext
from core.voice import MAX_UPLOAD_BYTES

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Room for a multipart body's boundaries, part headers and small fields around its file.
MULTIPART_OVERHEAD = 64 * 1024
# Routes that take a file: their own, larger limit (the file's own limit is the route's check).
UPLOAD_LIMITS: tuple[tuple[re.Pattern[str], int, str], ...] = (
    (
        re.compile(r"^/api/v1/sessions/[^/]+/voice$"),
        MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD,
        f"the audio file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB",
    ),
)


class RequestIdMiddleware:
    """Takes the caller's ``X-Request-ID`` when it is sane (else makes one), puts it in the log
    context, and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Unique, not secret: a random prefix per process and a counter.
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def _next_id(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else self._next_id()
        token = logcontext.request_id.set(request_id)
        conversation = logcontext.conversation_id.set(None)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logcontext.conversation_id.reset(conversation)
            logcontext.request_id.reset(token)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 before the app reads them: at once from
    ``Content-Length``, or while reading a chunked body. Upload routes (``uploads``: a path
    pattern and its limit) get their larger limit instead."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        uploads: tuple[tuple[re.Pattern[str], int, str], ...] = UPLOAD_LIMITS,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads

    def _limit(self, path: str) -> tuple[int, str]:
        for pattern, limit, detail in self.uploads:
            if pattern.match(path):
                return max(limit, self.max_bytes), detail
        return self.max_bytes, f"request body larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, too_large = self._limit(str(scope.get("path", "")))
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await self._refuse(send, 400, "Content-Length is not a number")
                return
            if declared > limit:
                await self._refuse(send, 413, too_large)
                return
            await self.app(scope, receive, send)
            return
        # No declared length: read the body here, within the limit, and replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > limit:
                await self._refuse(send, 413, too_large)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
