"""The one ASGI app: webhooks, the REST/WebSocket API, the chat page, health, readiness and
metrics."""

from __future__ import annotations

import html
import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.base import ChannelAdapter
from adapters.http.middleware import BodyLimitMiddleware, RequestIdMiddleware
from bot.metrics import CONTENT_TYPE, Metrics
from bot.runtime import Runtime
from core.errors import StoreUnavailable
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

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "the database is busy or unreachable; try again shortly"},
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
        try:
            await ping(runtime.db)
            checks["database"] = {"ok": True}
        except Exception as exc:  # /ready reports any failure rather than raising it
            checks["database"] = {"ok": False, "detail": type(exc).__name__}
        for channel in channels:
            try:
                ok, detail = await channel.check()
            except Exception as exc:  # a broken check is a not-ready channel, not a 500
                ok, detail = False, type(exc).__name__
            checks[channel.name] = {"ok": ok, "detail": detail}
        all_ok = all(c["ok"] for c in checks.values())
        # Reported, but not failing readiness: without it the bot still serves, unretrieved.
        if runtime.knowledge is None:
            checks["knowledge"] = {
                "ok": False,
                "detail": runtime.knowledge_problem,
                "degraded": True,
            }
        else:
            try:
                ok, detail = await runtime.knowledge.check()
            except Exception as exc:  # as for channels: reported, never raised
                ok, detail = False, type(exc).__name__
            checks["knowledge"] = {"ok": ok, "detail": detail, "degraded": not ok}
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
