"""``esoteric serve``'s knowledge base opens and ingests in the background: turns are answered
meanwhile without retrieval, ``/ready`` says what it is doing, and retrieval is used once it
is ready. Real embedded Chroma, the real model, SQLite and the ASGI app."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.asgi import create_app
from bot.runtime import Runtime, open_runtime
from bot.settings import Settings, load_settings
from core.knowledge.base import KnowledgeBase, connect_chroma
from core.knowledge.gate import KnowledgeGate
from core.knowledge.ingest import BUNDLED_MARKER, bundled_documents, bundled_source_documents
from core.messages import Inbound
from tests.conftest import MODEL_DIR
from tests.support.recording import RecordingPort
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "onnx").is_dir(), reason="embedding model not present"
)

QUESTION = "what documents do I need for a home loan?"
BUNDLED_CHUNKS = sum(len(doc.chunks) for doc in bundled_source_documents(bundled_documents()))


def settings_for(data: Path, **overrides: Any) -> Settings:
    return load_settings(**{"data_dir": data, "embedding_model_dir": MODEL_DIR, **overrides})


async def ready(runtime: Runtime) -> httpx.Response:
    app = create_app(runtime, [])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        return await client.get("/ready")


async def until(condition: Any) -> None:
    await wait_until(condition, limit=60)


async def ask(runtime: Runtime, port: RecordingPort, text: str, n: int) -> Any:
    inbound = Inbound(channel="test", chat_key=f"c{n}", sender_id="u1", text=text, event_id=str(n))
    await runtime.service.handle(inbound)
    await until(lambda: len(port.sent) >= n)
    return port.sent[n - 1][1]


async def test_turns_are_answered_while_ingesting_and_use_retrieval_once_ready(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path / "data")
    async with open_runtime(settings, scheduler=False, knowledge_in_background=True) as runtime:
        gate = runtime.knowledge
        assert isinstance(gate, KnowledgeGate)
        port = RecordingPort()
        runtime.service.register_channel("test", port)

        # A fresh store: the bundled documents are embedded while turns go on.
        await until(lambda: gate.state == "ingesting" and 0 < gate.done < gate.total)
        during = await ask(runtime, port, QUESTION, 1)
        still_ingesting = gate.state == "ingesting"
        response = await ready(runtime)
        assert still_ingesting, "the ingestion ended before the turn did; nothing was shown"
        assert not during.citations and not during.text.startswith("From ")
        # Not ready to retrieve, but ready to serve: a load balancer keeps sending turns.
        assert response.status_code == 200
        knowledge = response.json()["checks"]["knowledge"]
        assert knowledge["ok"] is False and knowledge["degraded"] is True
        words = knowledge["detail"].split()
        assert words[0] == "ingesting" and words[2] == "of" and words[4] == "chunks"
        assert 0 < int(words[1]) <= int(words[3]) == BUNDLED_CHUNKS

        await gate.wait_ready()
        assert gate.state == "ready"
        after = await ask(runtime, port, QUESTION, 2)
        assert after.citations and after.citations[0].source == "home-loan.md"
        knowledge = (await ready(runtime)).json()["checks"]["knowledge"]
        assert knowledge == {"ok": True, "detail": f"{BUNDLED_CHUNKS} chunks", "degraded": False}


async def test_an_interrupted_ingestion_is_resumed_on_the_next_start(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    async with open_runtime(settings, scheduler=False, knowledge_in_background=True) as runtime:
        gate = runtime.knowledge
        assert isinstance(gate, KnowledgeGate)
        await until(lambda: gate.state == "ingesting" and gate.done > 0)
        assert gate.done < BUNDLED_CHUNKS
    # Shut down mid-ingestion: what was stored stays, but the store is not marked complete.
    client = await asyncio.to_thread(connect_chroma, tmp_path / "data" / "chroma")
    kb = KnowledgeBase(client, None)  # type: ignore[arg-type]
    try:
        stored = await kb.count()
        assert 0 < stored < BUNDLED_CHUNKS
        assert await kb.get_marker(BUNDLED_MARKER) in (None, "")
    finally:
        await kb.close()

    async with open_runtime(settings, scheduler=False, knowledge_in_background=True) as runtime:
        gate = runtime.knowledge
        assert isinstance(gate, KnowledgeGate)
        await gate.wait_ready()
        assert gate.state == "ready"
        assert await gate.count() == BUNDLED_CHUNKS
        assert gate.kb is not None and await gate.kb.get_marker(BUNDLED_MARKER)


async def test_an_up_to_date_store_is_searched_by_the_first_turn(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "data")
    async with open_runtime(settings, scheduler=False) as runtime:  # ingested in the foreground
        assert await runtime.knowledge.count() == BUNDLED_CHUNKS  # type: ignore[union-attr]
    async with open_runtime(settings, scheduler=False, knowledge_in_background=True) as runtime:
        port = RecordingPort()
        runtime.service.register_channel("test", port)
        # Asked at once, while the store is still opening: the turn waits for it, briefly.
        reply = await ask(runtime, port, QUESTION, 1)
        assert reply.citations and reply.citations[0].source == "home-loan.md"


async def test_without_the_model_the_background_reports_why_and_turns_go_on(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path / "data", embedding_model_dir=tmp_path / "no-model")
    async with open_runtime(settings, scheduler=False, knowledge_in_background=True) as runtime:
        gate = runtime.knowledge
        assert isinstance(gate, KnowledgeGate)
        port = RecordingPort()
        runtime.service.register_channel("test", port)
        reply = await ask(runtime, port, "I need a car loan", 1)
        assert reply.text.startswith("Great, a Car Loan.")
        await gate.wait_ready()
        assert gate.state == "unavailable"
        knowledge = (await ready(runtime)).json()["checks"]["knowledge"]
        assert knowledge["ok"] is False and knowledge["degraded"] is True
        assert "ESOTERIC_EMBEDDING_MODEL_DIR" in knowledge["detail"]
