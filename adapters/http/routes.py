"""The REST and WebSocket routes of the web channel, as one FastAPI ``APIRouter``."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, WebSocket
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from core import logcontext
from core.errors import StoreUnavailable
from core.messages import MAX_TEXT_CHARS
from core.sessions import SessionRecord
from core.store.models import MessageStatus

from .channel import ChatResult, KnowledgeMissing, ShuttingDown, Socket, WebChannel, session_tag
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
    citations_out,
    reply_frame,
)
from .security import presented_key

log = logging.getLogger(__name__)

PREFIX = "/api/v1"

# Close codes in the 4000 range mirror the HTTP statuses a REST client would get.
WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404
WS_GONE = 4410

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)

SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="from POST /sessions")]

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown API key"},
    413: {"model": ErrorOut, "description": "request body too large"},
    429: {"model": ErrorOut, "description": "rate limit reached; see Retry-After"},
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


def _unavailable(detail: str, retry_after: int = 5) -> HTTPException:
    return HTTPException(503, detail, headers={"Retry-After": str(retry_after)})


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
        wait = await channel.limits.take("api-key", owner, channel.config.rate_limit_per_minute)
        if wait:
            raise HTTPException(
                429,
                f"rate limit of {channel.config.rate_limit_per_minute} requests a minute "
                f"reached; retry in {wait} s",
                headers={"Retry-After": str(wait)},
            )
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
            raise HTTPException(409, "this session has ended; start a new one")
        inbound = channel.inbound(record.id, body.message, body.client_message_id)
        try:
            result = await _store(channel.converse(inbound))
        except ShuttingDown:
            raise _unavailable("the server is restarting; send the message again") from None
        if result.status == MessageStatus.FAILED:
            raise HTTPException(500, "the bot could not answer this message; send it again")
        return _chat_out(record.id, result)

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


async def _authenticate_socket(channel: WebChannel, websocket: WebSocket) -> str | None:
    """Headers for programs; browsers, which cannot set headers on a WebSocket, send
    ``{"api_key": ...}`` as their first frame instead (never in the URL, which gets logged)."""
    in_headers = presented_key(
        websocket.headers.get("x-api-key"), websocket.headers.get("authorization")
    )
    if in_headers is not None:
        return channel.keys.match(in_headers)
    try:
        async with asyncio.timeout(channel.config.auth_timeout):
            first = await websocket.receive_text()
        key = json.loads(first).get("api_key")
    except (TimeoutError, ValueError, AttributeError, KeyError):
        return None
    return channel.keys.match(key) if isinstance(key, str) else None


async def _close(websocket: WebSocket, code: int, error: str, detail: str) -> None:
    if websocket.client_state == WebSocketState.CONNECTED:
        await websocket.send_json({"type": "error", "code": error, "detail": detail})
        await websocket.close(code=code, reason=error)


async def _serve_socket(channel: WebChannel, websocket: WebSocket, session_id: str) -> None:
    await websocket.accept()
    try:
        owner = await _authenticate_socket(channel, websocket)
        if owner is None:
            await _close(websocket, WS_UNAUTHORIZED, "unauthorized", "missing or unknown API key")
            return
        try:
            record = await channel.owned_session(session_id, owner)
        except StoreUnavailable:
            await _close(websocket, 1013, "unavailable", "the database is busy; reconnect soon")
            return
        if record is None:
            await _close(websocket, WS_NOT_FOUND, "not_found", "no such session for this key")
            return
        if record.ended_at is not None:
            await _close(websocket, WS_GONE, "session_ended", "this session has ended")
            return
        logcontext.conversation_id.set(session_tag(session_id))
        socket = Socket(websocket.send_json)
        try:
            await channel.subscribe(session_id, socket)
            await socket.send({"type": "ready", "session_id": session_id})
            await _receive_loop(channel, websocket, socket, session_id, owner)
        finally:
            await channel.unsubscribe(session_id, socket)
            await socket.close()
    except WebSocketDisconnect:
        return


async def _receive_loop(
    channel: WebChannel, websocket: WebSocket, socket: Socket, session_id: str, owner: str
) -> None:
    limit = channel.config.max_body_bytes
    while True:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return
        raw = event.get("text")
        if raw is None and event.get("bytes") is not None:
            raw = event["bytes"].decode("utf-8", errors="replace")
        if raw is None:
            continue
        if len(raw.encode("utf-8")) > limit:
            await socket.send(_error("too_large", f"frames are limited to {limit} bytes"))
            continue
        try:
            frame = WsMessageIn.model_validate_json(raw)
        except ValidationError as exc:
            await socket.send(_error("invalid", _first_problem(exc)))
            continue
        wait = await channel.limits.take("api-key", owner, channel.config.rate_limit_per_minute)
        if wait:
            await socket.send(
                {
                    **_error("rate_limited", f"too many messages; retry in {wait} s"),
                    "retry_after": wait,
                }
            )
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


def _first_problem(exc: ValidationError) -> str:
    problem = exc.errors()[0]
    where = ".".join(str(p) for p in problem.get("loc", ())) or "frame"
    return f'{where}: {problem.get("msg", "invalid")} (send {{"message": "..."}})'
