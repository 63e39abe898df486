"""The one ASGI app: webhooks, the REST/WebSocket API, the chat page, health, readiness and
metrics."""

from __future__ import annotations

import html
import logging
import re
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.base import ChannelAdapter
from adapters.http.admin_api import AdminLimit, build_admin_api_router
from adapters.http.admin_auth import AdminAuth
from adapters.http.admin_page import build_admin_page_router
from adapters.http.middleware import BodyLimitMiddleware, RequestIdMiddleware
from bot.metrics import CONTENT_TYPE, Metrics
from bot.runtime import Runtime
from core.dashboard import Dashboard
from core.errors import StoreUnavailable
from core.knowledge.gate import KnowledgeNotReady
from core.store.database import ping

log = logging.getLogger(__name__)


class _HttpMetricsMiddleware:
    """Counts answered requests by route template (never the raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.http_requests.labels(scope["method"], route, str(status)).inc()


# /ready needs no key, so what it says is public: a part's state in a few plain words ("webhook",
# "12 chunks", "socket mode disconnected") and never a path, an id or an exception's text, which
# go to the log instead. A detail passes only if every word is a plain lower-case word, a count,
# or one of a few names; anything else becomes "ok" or "unavailable", plus the settings it names.
_PLAIN_WORD = re.compile(r"^\(?(?:[a-z]+(?:-[a-z]+)*|\d+)\)?[,;:]?$")
_KNOWN_WORDS = frozenset({"HTTP", "WebSocket(s)", "Redis", "Postgres", "SQLite", "Chroma"})
_SETTING = re.compile(r"\b(?:ESOTERIC|SLACK|TELEGRAM|GROQ)_[A-Z0-9_]*[A-Z0-9]\b|\bDATABASE_URL\b")
_DETAIL_WORDS = 8


def public_detail(ok: bool, detail: str | None) -> str:
    """What /ready may show of a part's ``detail``."""
    words = (detail or "").split()
    if 0 < len(words) <= _DETAIL_WORDS and all(
        _PLAIN_WORD.match(w) or w in _KNOWN_WORDS for w in words
    ):
        return " ".join(words)
    generic = "ok" if ok else "unavailable"
    settings = list(dict.fromkeys(_SETTING.findall(detail or "")))[:3]
    return f"{generic}; check {', '.join(settings)}" if settings else generic


class _ReadinessLog:
    """Logs each part's full detail when it changes (not on every probe), for the operator."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[bool, str | None]] = {}

    def note(self, part: str, ok: bool, detail: str | None) -> None:
        if self._last.get(part) == (ok, detail):
            return
        self._last[part] = (ok, detail)
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "readiness of %s: %s (%s)", part, "ok" if ok else "not ok", detail)


def chat_page(page_key: str | None) -> str:
    """The chat page, with the public page key (if any) in a meta tag for its script."""
    page = resources.files("bot").joinpath("static/index.html").read_text("utf-8")
    meta = f'<meta name="esoteric-key" content="{html.escape(page_key or "", quote=True)}">'
    return page.replace("<!--esoteric-config-->", meta)


def create_app(runtime: Runtime, channels: list[ChannelAdapter]) -> FastAPI:
    settings = runtime.settings
    app = FastAPI(title="Esoteric", version="0.1.0", description="Esoteric loan-sales assistant")
    app.state.runtime = runtime
    app.state.channels = channels
    metrics = app.state.metrics = Metrics(runtime.service, runtime.db)
    readiness_log = _ReadinessLog()

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is busy or unreachable; try again shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(KnowledgeNotReady)
    async def knowledge_not_ready(request: Request, exc: KnowledgeNotReady) -> Response:
        # A search of a knowledge base still opening or ingesting (chat turns answer meanwhile).
        return JSONResponse(
            {"detail": f"the knowledge base is not ready: {public_detail(False, str(exc))}"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # The HTTP error funnel: logged in full here, never shown to the caller.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.get("/health", tags=["operations"], summary="The process is alive")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["operations"],
        summary="Database, knowledge base and channels",
        responses={503: {"description": "not ready; the body says which part"}},
    )
    async def ready() -> Any:
        checks: dict[str, dict[str, Any]] = {}

        def report(part: str, ok: bool, detail: str | None) -> dict[str, Any]:
            readiness_log.note(part, ok, detail)
            return {"ok": ok, "detail": public_detail(ok, detail)}

        try:
            await ping(runtime.db)
            checks["database"] = {"ok": True}
        except Exception as exc:  # /ready reports any failure rather than raising it
            checks["database"] = report("database", False, repr(exc))
        for channel in channels:
            try:
                ok, detail = await channel.check()
            except Exception as exc:  # a broken check is a not-ready channel, not a 500
                ok, detail = False, repr(exc)
            checks[channel.name] = report(channel.name, ok, detail)
        all_ok = all(c["ok"] for c in checks.values())
        # Reported, but not failing readiness: without it the bot still serves, unretrieved.
        # So is a knowledge base still opening or ingesting ("ingesting 40 of 120 chunks"):
        # turns are answered meanwhile, so a load balancer should keep sending them.
        if runtime.knowledge is None:
            checks["knowledge"] = {
                **report("knowledge", False, runtime.knowledge_problem),
                "degraded": True,
            }
        else:
            try:
                ok, detail = await runtime.knowledge.check()
            except Exception as exc:  # as for channels: reported, never raised
                ok, detail = False, repr(exc)
            checks["knowledge"] = {**report("knowledge", ok, detail), "degraded": not ok}
        return JSONResponse({"ready": all_ok, "checks": checks}, status_code=200 if all_ok else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        await metrics.refresh()
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    web = next((c for c in channels if c.name == "web"), None)
    if web is not None:
        page_key = settings.web_chat_key.get_secret_value() if settings.web_chat_key else None
        page = chat_page(page_key)

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def index() -> HTMLResponse:
            return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    for channel in channels:
        router = channel.router()
        if router is not None:
            app.include_router(router)
    # After the channels' routes: every request is matched against the routes in order (a few
    # microseconds each), and the API's and the webhooks' requests far outnumber the admin
    # page's. No path is in both.
    app.include_router(build_admin_page_router(resources.files("bot") / "static"))

    # The sales dashboard (/admin and /api/v1/admin/...): only with admin keys.
    if settings.admin_keys and settings.admin_secret is not None:
        app.state.admin_auth = AdminAuth(
            runtime.db,
            [key.get_secret_value() for key in settings.admin_keys],
            settings.admin_secret.get_secret_value(),
        )
        dashboard = Dashboard(runtime.db, settings.llm_price_per_million_tokens)
        runtime.close_later(dashboard.close)
        limit = AdminLimit(runtime.shared_limits(), settings.admin_requests_per_minute)
        app.include_router(build_admin_api_router(dashboard, limit))

    # Outermost last: request ids wrap everything, so even a refused body's log line has one.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(_HttpMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
