"""The REST and WebSocket routes of the web channel, as one FastAPI ``APIRouter``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, WebSocket
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from core import logcontext
from core.errors import ChatEnded, StoreUnavailable
from core.messages import MAX_TEXT_CHARS, Inbound
from core.sessions import SessionRecord
from core.store.models import MessageStatus

from .channel import (
    CLOSE_GONE,
    SESSION_ENDED,
    ChatResult,
    KnowledgeMissing,
    ShuttingDown,
    Socket,
    WebChannel,
    session_tag,
)
from .limits import Limited
from .models import (
    CLIENT_ID_PATTERN,
    SESSION_ID_PATTERN,
    ChatIn,
    ChatOut,
    ChoiceOut,
    ErrorOut,
    HistoryMessageOut,
    RagQueryIn,
    RagQueryOut,
    RagResultOut,
    SessionCreated,
    SessionOut,
    VoiceOut,
    citations_out,
    reply_frame,
)
from .security import presented_key
from .uploads import ACCEPTED_TYPES, read_voice_upload

log = logging.getLogger(__name__)

PREFIX = "/api/v1"

# Close codes in the 4000 range mirror the HTTP statuses a REST client would get.
WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404
WS_GONE = CLOSE_GONE
WS_TOO_MANY = 4429
# How much of a client's own text an error frame may quote back.
DETAIL_CHARS = 200

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="from POST /sessions")]

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown API key"},
    413: {"model": ErrorOut, "description": "request body too large"},
    429: {
        "model": ErrorOut,
        "description": "a rate limit reached (the detail names it: key, session or address); "
        "see Retry-After",
    },
}
_SESSION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such session for this API key"},
}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "temporarily unavailable; see Retry-After"},
}


class WsMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    client_message_id: str | None = Field(default=None, pattern=CLIENT_ID_PATTERN)


class WsAuthIn(BaseModel):
    """A browser's first frame. Parsed by pydantic, whose JSON parser bounds nesting (the
    standard library's recursed until RecursionError on a deeply nested frame)."""

    api_key: str = Field(min_length=1, max_length=1024)


_VOICE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": {
                            "type": "string",
                            "format": "binary",
                            "description": f"the recording ({ACCEPTED_TYPES}); "
                            "the field may also be named 'file'",
                        },
                        "client_message_id": {
                            "type": "string",
                            "pattern": CLIENT_ID_PATTERN,
                            "description": "a retry with the same id is heard and answered once",
                        },
                        "duration": {
                            "type": "number",
                            "minimum": 0,
                            "description": "the recording's length in seconds",
                        },
                    },
                },
                "encoding": {"audio": {"contentType": "audio/*, video/webm, video/mp4"}},
            }
        },
    }
}


_QUOTE_PDF: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the quote (Key Facts Statement) as a PDF, named after its reference",
        "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "Content-Disposition": {
                "description": 'attachment; filename="<reference>.pdf"',
                "schema": {"type": "string"},
            }
        },
    },
    404: {
        "model": ErrorOut,
        "description": "no such session for this API key, or its conversation has no quote yet",
    },
}
NO_QUOTE = "this session has no quote yet: tell the bot the loan, the amount and the tenure first"


def _unavailable(detail: str, retry_after: int = 5) -> HTTPException:
    return HTTPException(503, detail, headers={"Retry-After": str(retry_after)})


def _too_many(limited: Limited) -> HTTPException:
    return HTTPException(429, limited.detail, headers={"Retry-After": str(limited.retry_after)})


def _ended() -> HTTPException:
    return HTTPException(409, "this session has ended; start a new one")


def build_router(channel: WebChannel) -> APIRouter:
    async def caller(
        request: Request,
        api_key: Annotated[str | None, Depends(_api_key_header)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> str:
        """The hash of the caller's API key, after the rate limit; 401 or 429 otherwise."""
        owner = channel.keys.match(
            presented_key(api_key, f"Bearer {bearer.credentials}" if bearer else None)
        )
        if owner is None:
            raise HTTPException(
                401,
                "missing or unknown API key: send it as X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        host = request.client.host if request.client else None
        limited = await channel.web_limits.request(owner, host)
        if limited is not None:
            raise _too_many(limited)
        return owner

    # A default rather than an Annotated alias: annotations are strings here, and FastAPI
    # resolves them in the module's namespace, where this closure's dependency is not.
    owner_dependency = Depends(caller)

    async def owned(session_id: str, owner: str) -> SessionRecord:
        record = await _store(channel.owned_session(session_id, owner))
        if record is None:
            raise HTTPException(404, "no such session for this API key")
        logcontext.conversation_id.set(session_tag(session_id))
        return record

    async def converse(inbound: Inbound) -> ChatResult:
        """A REST message's turn (text or voice), its answer or a clear status."""
        try:
            result: ChatResult = await _store(channel.converse(inbound, answered_then_synced=True))
        except ShuttingDown:
            raise _unavailable("the server is restarting; send the message again") from None
        except ChatEnded:
            # Ended by another process a moment ago: the core refused the message.
            raise _ended() from None
        if result.status == MessageStatus.FAILED:
            raise HTTPException(500, "the bot could not answer this message; send it again")
        return result

    router = APIRouter(prefix=PREFIX, tags=["chat"], responses=_UNAUTHORIZED)

    @router.post(
        "/sessions",
        status_code=201,
        response_model=SessionCreated,
        responses=_UNAVAILABLE,
        summary="Start a chat session",
    )
    async def create_session(owner: str = owner_dependency) -> SessionCreated:
        record = await _store(channel.create_session(owner))
        return SessionCreated(session_id=record.id, created_at=record.created_at)

    @router.get(
        "/sessions/{session_id}",
        response_model=SessionOut,
        responses={**_SESSION_ERRORS, **_UNAVAILABLE},
        summary="A session's status, timestamps and messages",
    )
    async def get_session(session_id: SessionId, owner: str = owner_dependency) -> SessionOut:
        record = await owned(session_id, owner)
        view = await _store(channel.view(record))
        return SessionOut(
            session_id=record.id,
            status=view.status,
            created_at=record.created_at,
            last_activity_at=view.last_activity_at,
            ended_at=record.ended_at,
            messages=[
                HistoryMessageOut(
                    id=m.id,
                    role=m.role,
                    text=m.text,
                    created_at=m.created_at,
                    citations=citations_out(list(m.citations)),
                    choices=[ChoiceOut.model_validate(c) for c in m.choices],
                    answers=list(m.answers),
                )
                for m in view.messages
            ],
        )

    @router.delete(
        "/sessions/{session_id}",
        status_code=204,
        response_class=Response,
        responses={**_SESSION_ERRORS, **_UNAVAILABLE},
        summary="End a session (its history is kept)",
    )
    async def delete_session(session_id: SessionId, owner: str = owner_dependency) -> Response:
        record = await owned(session_id, owner)
        await _store(channel.end(record))
        return Response(status_code=204)

    @router.post(
        "/chat",
        response_model=ChatOut,
        responses={
            **_SESSION_ERRORS,
            **_UNAVAILABLE,
            409: {"model": ErrorOut, "description": "the session has ended"},
        },
        summary="Send a message and get the reply",
    )
    async def chat(body: ChatIn, owner: str = owner_dependency) -> ChatOut:
        record = await owned(body.session_id, owner)
        if record.ended_at is not None:
            raise _ended()
        limited = await channel.web_limits.rest_message(owner, record.id)
        if limited is not None:
            raise _too_many(limited)
        inbound = channel.inbound(record.id, body.message, body.client_message_id)
        return _chat_out(record.id, await converse(inbound))

    @router.post(
        "/sessions/{session_id}/voice",
        response_model=VoiceOut,
        responses={
            **_SESSION_ERRORS,
            **_UNAVAILABLE,
            400: {"model": ErrorOut, "description": "the multipart body could not be read"},
            409: {"model": ErrorOut, "description": "the session has ended"},
            413: {"model": ErrorOut, "description": "the audio file is larger than 25 MB"},
            415: {"model": ErrorOut, "description": "the file is not audio"},
        },
        openapi_extra=_VOICE_BODY,
        summary="Send a voice note and get the reply, with what was heard",
    )
    async def voice(
        session_id: SessionId, request: Request, owner: str = owner_dependency
    ) -> VoiceOut:
        record = await owned(session_id, owner)
        if record.ended_at is not None:
            raise _ended()
        limited = await channel.web_limits.rest_message(owner, record.id)
        if limited is not None:
            raise _too_many(limited)
        upload = await read_voice_upload(request)
        inbound = channel.voice_inbound(record.id, upload)
        result = await converse(inbound)
        transcript = await _store(channel.transcript(result.inbound_id))
        return VoiceOut(**_chat_out(record.id, result).model_dump(), transcript=transcript)

    @router.get(
        "/sessions/{session_id}/quote.pdf",
        response_class=Response,
        responses={**_QUOTE_PDF, **_UNAVAILABLE},
        summary="The session's latest quote as a PDF (404 when there is none)",
    )
    async def quote_pdf(session_id: SessionId, owner: str = owner_dependency) -> Response:
        record = await owned(session_id, owner)
        quote = await _store(channel.latest_quote(record))
        if quote is None:
            raise HTTPException(404, NO_QUOTE)
        return Response(
            quote.data,
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="{quote.filename}"',
                # A customer's figures: never kept by a shared cache.
                "Cache-Control": "private, no-store",
            },
        )

    @router.post(
        "/rag/query",
        response_model=RagQueryOut,
        responses=_UNAVAILABLE,
        summary="Search the knowledge base",
    )
    async def rag_query(body: RagQueryIn, owner: str = owner_dependency) -> RagQueryOut:
        try:
            hits = await channel.search(body.query, body.top_k)
        except KnowledgeMissing as exc:
            raise _unavailable(f"no knowledge base: {exc}", retry_after=60) from None
        return RagQueryOut(
            query=body.query,
            results=[
                RagResultOut(
                    chunk_id=h.chunk_id,
                    source=h.source,
                    heading=h.heading,
                    score=round(h.score, 4),
                    text=h.text,
                )
                for h in hits
            ],
        )

    @router.websocket("/ws/{session_id}")
    async def websocket(websocket: WebSocket, session_id: str) -> None:
        await _serve_socket(channel, websocket, session_id)

    return router


async def _store(awaitable: Any) -> Any:
    """A locked or unreachable database is a 503 with Retry-After, never a stack trace."""
    try:
        return await awaitable
    except StoreUnavailable:
        log.warning("database unavailable for an API request", exc_info=True)
        raise _unavailable("the database is busy or unreachable; try again shortly") from None


def _chat_out(session_id: str, result: ChatResult) -> ChatOut:
    reply = result.reply
    return ChatOut(
        session_id=session_id,
        reply=reply.text if reply else None,
        citations=citations_out(reply.citations) if reply else [],
        choices=[ChoiceOut(label=c.label, value=c.value) for c in reply.choices] if reply else [],
        duplicate=result.duplicate,
        message_id=result.message_id,
    )


# -- WebSocket --------------------------------------------------------------------------------

KEY_FRAME = 'send the key in the X-API-Key header, or as the first frame {"api_key": "..."}'


class _BadKeyFrame(Exception):
    """The first frame was not ``{"api_key": "..."}``."""


async def _authenticate_socket(channel: WebChannel, websocket: WebSocket) -> str | None:
    """Headers for programs; browsers, which cannot set headers on a WebSocket, send
    ``{"api_key": ...}`` as their first frame instead (never in the URL, which gets logged).
    ``None`` for an unknown key; ``_BadKeyFrame`` for a first frame that is not a key frame."""
    in_headers = presented_key(
        websocket.headers.get("x-api-key"), websocket.headers.get("authorization")
    )
    if in_headers is not None:
        return channel.keys.match(in_headers)
    try:
        async with asyncio.timeout(channel.config.auth_timeout):
            event = await websocket.receive()
    except TimeoutError:
        raise _BadKeyFrame("no key within the time allowed") from None
    if event["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(event.get("code", 1000), event.get("reason"))
    raw = event.get("text")
    if raw is None:
        raise _BadKeyFrame("the key frame must be a text frame")
    if len(raw) > channel.config.max_body_bytes:
        raise _BadKeyFrame("the key frame is too large")
    try:
        frame = WsAuthIn.model_validate_json(raw)
    except (ValueError, RecursionError):  # pydantic's ValidationError is a ValueError
        raise _BadKeyFrame("the first frame is not a key frame") from None
    return channel.keys.match(frame.api_key)


async def _close(websocket: WebSocket, code: int, error: str, detail: str) -> None:
    if websocket.client_state == WebSocketState.CONNECTED:
        await websocket.send_json({"type": "error", "code": error, "detail": detail})
        await websocket.close(code=code, reason=error)


def _client_host(websocket: WebSocket) -> str | None:
    return websocket.client.host if websocket.client else None


async def _serve_socket(channel: WebChannel, websocket: WebSocket, session_id: str) -> None:
    await websocket.accept()
    try:
        try:
            owner = await _authenticate_socket(channel, websocket)
        except _BadKeyFrame as exc:
            await _close(websocket, WS_UNAUTHORIZED, "unauthorized", f"{exc}: {KEY_FRAME}")
            return
        if owner is None:
            await _close(websocket, WS_UNAUTHORIZED, "unauthorized", "missing or unknown API key")
            return
        host = _client_host(websocket)
        try:
            limited = await channel.web_limits.connection(owner, host)
            record = await channel.owned_session(session_id, owner) if limited is None else None
        except StoreUnavailable:
            await _close(websocket, 1013, "unavailable", "the database is busy; reconnect soon")
            return
        if limited is not None:
            await _close_limited(websocket, limited)
            return
        if record is None:
            await _close(websocket, WS_NOT_FOUND, "not_found", "no such session for this key")
            return
        if record.ended_at is not None:
            await _close(websocket, WS_GONE, SESSION_ENDED, "this session has ended")
            return
        logcontext.conversation_id.set(session_tag(session_id))
        socket = Socket(websocket.send_json, _closer(websocket))
        try:
            await channel.subscribe(session_id, socket)
            await socket.send({"type": "ready", "session_id": session_id})
            await _receive_loop(channel, websocket, socket, session_id, owner)
        finally:
            await channel.unsubscribe(session_id, socket)
            await socket.close()
    except WebSocketDisconnect:
        return


def _closer(websocket: WebSocket) -> Callable[[int, str], Awaitable[None]]:
    async def close(code: int, reason: str) -> None:
        if websocket.application_state == WebSocketState.CONNECTED:
            await websocket.close(code=code, reason=reason)

    return close


async def _close_limited(websocket: WebSocket, limited: Limited) -> None:
    if websocket.client_state == WebSocketState.CONNECTED:
        await websocket.send_json(_limited_frame(limited))
        await websocket.close(code=WS_TOO_MANY, reason="rate_limited")


async def _receive_loop(
    channel: WebChannel, websocket: WebSocket, socket: Socket, session_id: str, owner: str
) -> None:
    limit = channel.config.max_body_bytes
    host = _client_host(websocket)
    while not socket.ended:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return
        raw = event.get("text")
        if raw is None and event.get("bytes") is not None:
            raw = event["bytes"].decode("utf-8", errors="replace")
        if raw is None:
            continue
        if len(raw.encode("utf-8", errors="replace")) > limit:
            await socket.send(_error("too_large", f"frames are limited to {limit} bytes"))
            continue
        try:
            frame = WsMessageIn.model_validate_json(raw)
        except ValidationError as exc:
            await socket.send(_error("invalid", _first_problem(exc)))
            continue
        except (ValueError, RecursionError):
            await socket.send(_error("invalid", 'frame: not a message (send {"message": "..."})'))
            continue
        try:
            limited = await channel.web_limits.socket_message(owner, host, session_id)
        except StoreUnavailable:
            await socket.send(_error("unavailable", "busy; send it again shortly"))
            continue
        if limited is not None:
            await socket.send(_limited_frame(limited))
            continue
        if not channel.accepting:
            await socket.send(_error("shutting_down", "the server is restarting; send it again"))
            continue
        inbound = channel.inbound(session_id, frame.message, frame.client_message_id)
        # One task per message: the core queues follow-ups in arrival order while a turn runs.
        task = asyncio.create_task(
            _socket_turn(channel, socket, inbound, frame.client_message_id), name="web-turn"
        )
        channel.track(task)


async def _socket_turn(
    channel: WebChannel, socket: Socket, inbound: Any, client_message_id: str | None
) -> None:
    try:
        result = await channel.converse(inbound)
    except ShuttingDown:
        await socket.send(_error("shutting_down", "the server is restarting; send it again"))
        return
    except ChatEnded:
        # Ended by another process: the core refused the message. The frame closes the socket.
        await socket.send(_error(SESSION_ENDED, "this session has ended"))
        return
    except StoreUnavailable:
        await socket.send(_error("unavailable", "the database is busy; send it again shortly"))
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        # The socket's error funnel: the message stays stored and is answered on recovery.
        log.exception("web turn failed")
        await socket.send(_error("internal", "something went wrong; please send that again"))
        return
    if result.duplicate and result.reply is not None:
        # A resend of an answered message: the answer again, marked so the page can skip it.
        frame = reply_frame(result.reply)
        await socket.send({**frame, "duplicate": True, "client_message_id": client_message_id})


def _error(code: str, detail: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "detail": detail}


def _limited_frame(limited: Limited) -> dict[str, Any]:
    return {
        **_error("rate_limited", limited.detail),
        "limit": limited.limit,
        "retry_after": limited.retry_after,
    }


def _first_problem(exc: ValidationError) -> str:
    problems = exc.errors()
    if not problems:
        return 'frame: invalid (send {"message": "..."})'
    problem = problems[0]
    where = ".".join(str(p) for p in problem.get("loc", ())) or "frame"
    detail = f"{where}: {problem.get('msg', 'invalid')}"
    # The location may be a key the client made up: never echo much of it back.
    return f'{detail[:DETAIL_CHARS]} (send {{"message": "..."}})'
