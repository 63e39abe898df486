"""The one ASGI app: webhooks, the REST/WebSocket API, health, readiness and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from adapters.base import ChannelAdapter
from bot.runtime import Runtime
from core.store.database import ping


def create_app(runtime: Runtime, channels: list[ChannelAdapter]) -> FastAPI:
    app = FastAPI(title="Esoteric", version="0.1.0")
    app.state.runtime = runtime
    app.state.channels = channels

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        from fastapi.responses import JSONResponse

        checks: dict[str, dict[str, Any]] = {}
        try:
            await ping(runtime.db)
            checks["database"] = {"ok": True}
        except Exception as exc:  # /ready reports any failure rather than raising it
            checks["database"] = {"ok": False, "detail": type(exc).__name__}
        for channel in channels:
            ok, detail = await channel.check()
            checks[channel.name] = {"ok": ok, "detail": detail}
        all_ok = all(c["ok"] for c in checks.values())
        return JSONResponse({"ready": all_ok, "checks": checks}, status_code=200 if all_ok else 503)

    for channel in channels:
        router = channel.router()
        if router is not None:
            app.include_router(router)
    return app
