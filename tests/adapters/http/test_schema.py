"""schemathesis against the app's own OpenAPI schema, on a real server: no 5xx, and every
response (status, content type, headers, body) as the schema says."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings

from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import open_runtime
from bot.settings import load_settings
from tests.adapters.http.conftest import KEY, OTHER_KEY
from tests.support.keyword_knowledge import KeywordKnowledge


class ServerThread:
    """The whole app (runtime, channels, uvicorn) on its own event loop in a thread, because
    schemathesis drives it synchronously, case by case."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.base_url = ""
        self.started = threading.Event()
        self.server: uvicorn.Server | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="schema-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test through start()
            self.error = exc
            self.started.set()

    async def _serve(self) -> None:
        settings_ = load_settings(
            data_dir=self.data_dir,
            api_keys=f"{KEY},{OTHER_KEY}",
            embedding_model_dir=self.data_dir / "no-model",
            rate_limit_per_minute=100_000,
        )
        async with open_runtime(settings_, scheduler=False) as runtime:
            # Retrieval answers (without it /rag/query is, rightly, a 503).
            runtime.knowledge = KeywordKnowledge()
            channels = build_channels(runtime)
            app = create_app(runtime, channels)
            self.server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
            )
            serving = asyncio.create_task(self.server.serve())
            while not self.server.started and not serving.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            port = self.server.servers[0].sockets[0].getsockname()[1]
            self.base_url = f"http://127.0.0.1:{port}"
            self.started.set()
            await serving
            for channel in channels:
                await channel.stop()

    def start(self) -> str:
        self.thread.start()
        assert self.started.wait(60), "the server did not start"
        if self.error is not None:
            raise self.error
        return self.base_url

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ServerThread(tmp_path_factory.mktemp("schema"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


def test_every_operation_keeps_to_its_schema(api_schema: schemathesis.BaseSchema) -> None:
    # Each operation in turn with hypothesis directly: schemathesis's pytest plugin lags
    # behind the pytest this project uses.
    labels = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)

        @settings(
            max_examples=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"X-API-Key": KEY})

        check()
    assert {"POST /api/v1/chat", "GET /api/v1/sessions/{session_id}", "GET /ready"} <= set(labels)
