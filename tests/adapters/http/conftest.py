"""The real app over the real runtime (SQLite in a temp dir, the scripted agent), driven through
httpx; WebSockets through a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from tests.support.seeded import seed_database

KEY = "test-key-alpha-0123456789"
OTHER_KEY = "test-key-bravo-9876543210"


@dataclass
class Api:
    app: FastAPI
    runtime: Runtime
    client: httpx.AsyncClient

    def headers(self, key: str = KEY) -> dict[str, str]:
        return {"X-API-Key": key}

    async def new_session(self, key: str = KEY) -> str:
        response = await self.client.post("/api/v1/sessions", headers=self.headers(key))
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])


@contextlib.asynccontextmanager
async def running_api(
    tmp_path: Path, prepare: Callable[[Runtime], None] | None = None, **settings: Any
) -> AsyncIterator[Api]:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "api_keys": f"{KEY},{OTHER_KEY}",
        # No model here: the runtime runs without retrieval at once (tests that need it set one).
        "embedding_model_dir": tmp_path / "no-model",
    }
    values.update(settings)
    config = load_settings(**values)
    await seed_database(config)
    async with open_runtime(config, scheduler=False) as runtime:
        if prepare is not None:
            prepare(runtime)
        channels = build_channels(runtime)
        for channel in channels:
            await channel.start()
        app = create_app(runtime, channels)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://esoteric") as client:
                yield Api(app, runtime, client)
        finally:
            for channel in reversed(channels):
                await channel.stop()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app on a real uvicorn server on 127.0.0.1 (port 0); yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 - uvicorn exposes only this flag
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
