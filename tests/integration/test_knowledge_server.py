"""The knowledge base on a real Chroma server (``chroma run``), as with ESOTERIC_CHROMA_URL."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import chromadb
import httpx
import pytest
from chromadb.config import Settings as ChromaSettings

from bot.cli import main
from bot.kb import ingest_command
from bot.runtime import open_runtime
from bot.settings import load_settings
from core.knowledge.base import (
    COLLECTION,
    IngestReport,
    KnowledgeBase,
    SourceDocument,
    connect_chroma,
)
from core.knowledge.chunking import chunk_id
from core.knowledge.embedding import load_embedder
from core.knowledge.types import Chunk
from core.messages import Inbound
from tests.conftest import MODEL_DIR
from tests.support.knowledge_docs import docs_folder
from tests.support.recording import RecordingPort

CHROMA = Path(sys.executable).parent / "chroma"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = (path / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(CHROMA),
            "run",
            "--path",
            str(path / "db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"chroma run exited: {(path / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("chroma run did not answer its heartbeat within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def server(chroma_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The server with no knowledge collection, and the environment pointing at it."""
    host, port = chroma_url.removeprefix("http://").split(":")
    client = chromadb.HttpClient(
        host=host, port=int(port), settings=ChromaSettings(anonymized_telemetry=False)
    )
    if COLLECTION in [c.name for c in client.list_collections()]:
        client.delete_collection(COLLECTION)
    monkeypatch.setenv("ESOTERIC_CHROMA_URL", chroma_url)
    monkeypatch.setenv("ESOTERIC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ESOTERIC_EMBEDDING_MODEL_DIR", str(MODEL_DIR))
    return chroma_url


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = docs_folder(tmp_path)
    return docs


def test_kb_commands_work_against_a_chroma_server(
    server: str, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kb", "ingest", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"2 chunks in {server}" in out
    assert main(["kb", "ingest", str(folder)]) == 0
    assert "0 chunks added, 2 unchanged" in capsys.readouterr().out
    assert main(["kb", "stats"]) == 0
    assert f"at {server}: 2 chunks" in capsys.readouterr().out
    assert main(["kb", "query", "how is my jewellery valued"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "gold-loan.md > Gold Loan > Valuation" in first
    # Nothing was written to the local data directory: the server holds the knowledge base.
    assert not (Path(load_settings().data_dir) / "chroma").exists()


async def test_chat_answers_from_the_server_knowledge_base(server: str, folder: Path) -> None:
    assert await ingest_command(load_settings(), [folder], bundled=False) == 0
    async with open_runtime(load_settings(), scheduler=False) as runtime:
        assert runtime.knowledge is not None
        # A server is shared: the bundled documents are ingested on purpose, never implicitly.
        assert await runtime.knowledge.count() == 2
        port = RecordingPort()
        runtime.service.register_channel("test", port)
        await runtime.service.handle(
            Inbound("test", "c1", "u1", "what purity of gold do you accept?", event_id="1")
        )
        reply = port.sent[0][1]
        assert reply.text.startswith("From gold-loan.md, Purity: We accept gold ornaments")
        assert [(c.source, c.heading) for c in reply.citations] == [
            ("gold-loan.md", "Gold Loan > Purity")
        ]


async def test_an_unreachable_server_means_running_without_retrieval(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ESOTERIC_CHROMA_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("ESOTERIC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ESOTERIC_EMBEDDING_MODEL_DIR", str(MODEL_DIR))
    async with open_runtime(load_settings(), scheduler=False) as runtime:
        assert runtime.knowledge is None
        assert "cannot open Chroma at http://127.0.0.1:" in (runtime.knowledge_problem or "")


async def test_searches_ask_the_server_so_another_process_s_writes_are_seen(
    chroma_url: str,
) -> None:
    """A server is shared and re-ingested by other processes: no copy of it is searched."""
    embedder = await asyncio.to_thread(load_embedder, MODEL_DIR)
    name = "esoteric-shared-test"
    reader = KnowledgeBase(await asyncio.to_thread(connect_chroma, None, chroma_url), embedder,
                           collection=name)  # fmt: skip
    writer = KnowledgeBase(await asyncio.to_thread(connect_chroma, None, chroma_url), embedder,
                           collection=name)  # fmt: skip
    try:
        assert not reader.exact
        question = "how is my jewellery valued?"
        assert await reader.search(question, 4, floor=0.0) == []
        text = "Gold is valued at the day's rate for its purity, net of stones."
        chunk = Chunk(chunk_id("r", "gold.md", "Gold > Valuation", text), "r", "gold.md",
                      "Gold > Valuation", text, 0)  # fmt: skip
        await writer.ingest_source(SourceDocument("r", "gold.md", (chunk,)), IngestReport())
        hits = await reader.search(question, 4)
        assert [h.chunk_id for h in hits] == [chunk.chunk_id]
        await writer.ingest_source(SourceDocument("r", "gold.md", ()), IngestReport())
        assert await reader.search(question, 4, floor=0.0) == []
    finally:
        await asyncio.to_thread(writer.client.delete_collection, name)
        await reader.close()
        await writer.close()
