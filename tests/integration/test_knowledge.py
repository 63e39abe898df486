"""The knowledge base on embedded Chroma with the real MiniLM model: ingestion, retrieval, the
bundled documents, the turn pipeline, readiness and a long ingestion beside chat turns."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.asgi import create_app
from bot.runtime import open_runtime
from bot.settings import Settings, load_settings
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService
from core.knowledge.answer import knowledge_lookup
from core.knowledge.base import IngestReport, KnowledgeBase, SourceDocument, connect_chroma
from core.knowledge.batcher import QueryBatcher
from core.knowledge.chunking import chunk_id
from core.knowledge.embedding import EmbeddingUnavailable, MiniLMEmbedder, load_embedder
from core.knowledge.ingest import BUNDLED_MARKER, ingest_paths, sync_bundled
from core.knowledge.query import QueryExpander
from core.knowledge.types import Chunk
from core.messages import Inbound
from core.store.database import Database
from core.store.models import Message
from tests.conftest import MODEL_DIR
from tests.support.knowledge_docs import docs_folder
from tests.support.recording import RecordingPort
from tests.unit.test_knowledge_documents import make_pdf

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return load_embedder(MODEL_DIR)


@pytest.fixture(scope="module")
def seeded_chroma(embedder: MiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Chroma folder holding the bundled knowledge base, ingested once for the module; tests
    copy it, so each starts from the state a first run leaves behind."""
    path = tmp_path_factory.mktemp("seeded") / "chroma"

    async def seed() -> None:
        kb = KnowledgeBase(await asyncio.to_thread(connect_chroma, path), embedder)
        try:
            assert await sync_bundled(kb) is not None
        finally:
            await kb.close()

    asyncio.run(seed())
    return path


def data_dir_with_kb(seeded: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(seeded, data / "chroma")
    return data


@pytest.fixture
async def bundled_kb(
    seeded_chroma: Path, embedder: MiniLMEmbedder, tmp_path: Path
) -> AsyncIterator[KnowledgeBase]:
    data = data_dir_with_kb(seeded_chroma, tmp_path)
    kb = KnowledgeBase(await asyncio.to_thread(connect_chroma, data / "chroma"), embedder)
    await kb.open()
    try:
        yield kb
    finally:
        await kb.close()


@pytest.fixture
def sample_folder(tmp_path: Path) -> Path:
    folder = docs_folder(tmp_path)
    (folder / "hours.txt").write_text(
        "Branches open from 10 am to 4 pm on weekdays.", encoding="utf-8"
    )
    (folder / "locker.html").write_text(
        "<h1>Lockers</h1><h2>Rent</h2><p>Locker rent is charged every year in advance.</p>",
        encoding="utf-8",
    )
    (folder / "policy.pdf").write_bytes(make_pdf(["Nominees can claim locker contents."]))
    return folder


async def documents_of(kb: KnowledgeBase) -> list[str]:
    got = await asyncio.to_thread(kb._coll().get, include=["documents"])
    return list(got["documents"] or [])


# -- ingestion ------------------------------------------------------------------------------------


async def test_ingestion_is_an_idempotent_upsert_that_replaces_changed_and_removed_files(
    embedder: MiniLMEmbedder, sample_folder: Path, tmp_path: Path
) -> None:
    (sample_folder / "empty.md").write_text("", encoding="utf-8")
    (sample_folder / "scan.pdf").write_bytes(b"%PDF-1.4 garbage")
    (sample_folder / "photo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    kb = KnowledgeBase(await asyncio.to_thread(connect_chroma, tmp_path / "chroma"), embedder)
    errors: list[str] = []
    try:
        first = await ingest_paths(kb, [sample_folder], on_error=errors.append)
        assert first.files == 4 and first.added == 5 and first.removed == 0
        by_file = {Path(e.split(": ", 1)[0]).name: e.split(": ", 1)[1] for e in errors}
        assert sorted(by_file) == ["empty.md", "photo.md", "scan.pdf"]
        assert by_file["empty.md"] == "empty file"
        assert by_file["photo.md"] == "binary content in a text file"
        assert by_file["scan.pdf"].startswith("unreadable PDF")
        assert await kb.count() == 5

        again = await ingest_paths(kb, [sample_folder])
        assert (again.added, again.unchanged, again.removed) == (0, 5, 0)
        assert await kb.count() == 5

        gold = sample_folder / "gold-loan.md"
        gold.write_text(
            gold.read_text(encoding="utf-8").replace("18 to 22 carat", "20 to 24 carat"),
            encoding="utf-8",
        )
        changed = await ingest_paths(kb, [sample_folder])
        assert (changed.added, changed.unchanged, changed.removed) == (1, 4, 1)
        texts = await documents_of(kb)
        assert any("20 to 24 carat" in t for t in texts)
        assert not any("18 to 22 carat" in t for t in texts)

        (sample_folder / "hours.txt").unlink()
        removed = await ingest_paths(kb, [sample_folder])
        assert removed.removed == 1 and await kb.count() == 4
        stats = await kb.stats()
        assert sorted(s.source for s in stats.sources) == [
            "gold-loan.md",
            "locker.html",
            "policy.pdf",
        ]
        hits = await kb.search("what purity of gold jewellery do you accept?", 2)
        assert hits[0].source == "gold-loan.md" and hits[0].heading == "Gold Loan > Purity"
        pdf = await kb.search("who can claim what is in a locker", 1)
        assert (pdf[0].source, pdf[0].heading) == ("policy.pdf", "Page 1")

        # Every file gone: searching the emptied collection finds nothing, without an error.
        await asyncio.to_thread(shutil.rmtree, sample_folder)
        await asyncio.to_thread(sample_folder.mkdir)
        await ingest_paths(kb, [sample_folder])
        assert await kb.count() == 0
        assert await kb.search("what purity of gold jewellery do you accept?", 2) == []
    finally:
        await kb.close()


async def test_a_single_named_file_is_replaced_in_place(
    embedder: MiniLMEmbedder, sample_folder: Path, tmp_path: Path
) -> None:
    kb = KnowledgeBase(await asyncio.to_thread(connect_chroma, tmp_path / "chroma"), embedder)
    try:
        await ingest_paths(kb, [sample_folder])
        hours = sample_folder / "hours.txt"
        hours.write_text("Branches open from 9 am to 5 pm on weekdays.", encoding="utf-8")
        report = await ingest_paths(kb, [hours])
        assert (report.added, report.removed) == (1, 1)
        texts = await documents_of(kb)
        assert sum("Branches open" in t for t in texts) == 1
        assert await kb.count() == 5
    finally:
        await kb.close()


# -- retrieval on the bundled knowledge base -------------------------------------------------------


async def test_the_answering_section_ranks_first_and_the_floor_filters(
    bundled_kb: KnowledgeBase,
) -> None:
    hits = await bundled_kb.search("what documents do I need for a home loan?", 3)
    assert (hits[0].source, hits[0].heading) == ("home-loan.md", "Home Loan > Documents required")
    assert all(0 <= h.score <= 1 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    expand = QueryExpander.for_catalogue(load_catalogue()).expand
    car = await bundled_kb.search(expand("gaadi loan ke documents"), 1)
    assert (car[0].source, car[0].heading) == ("car-loan.md", "Car Loan > Documents required")
    assert await bundled_kb.search("recipe for chicken biryani", 4) == []
    assert len(await bundled_kb.search("recipe for chicken biryani", 4, floor=0.0)) == 4
    assert await bundled_kb.search("   ") == []


def eval_questions() -> list[str]:
    data = json.loads((ROOT / "bench" / "data" / "retrieval_eval.json").read_text("utf-8"))
    return [item["q"] for item in data["questions"]]


async def test_exact_search_finds_what_chromas_own_query_finds(
    bundled_kb: KnowledgeBase,
) -> None:
    """Embedded Chroma is searched on a memory copy of its vectors; Chroma's HNSW query over
    the same collection gives the same chunks in the same order, with the same scores."""
    assert bundled_kb.exact
    expand = QueryExpander.for_catalogue(load_catalogue()).expand
    questions = eval_questions()
    for question in [*questions, *(expand(q) for q in questions), "recipe for chicken biryani"]:
        bundled_kb.exact = True
        exact = await bundled_kb.search(question, 5, floor=0.0)
        bundled_kb.exact = False
        chroma = await bundled_kb.search(question, 5, floor=0.0)
        assert [h.chunk_id for h in exact] == [h.chunk_id for h in chroma], question
        assert [(h.text, h.source, h.heading) for h in exact] == [
            (h.text, h.source, h.heading) for h in chroma
        ]
        for mine, theirs in zip(exact, chroma, strict=True):
            assert mine.score == pytest.approx(theirs.score, abs=1e-5)
    bundled_kb.exact = True
    # The floor applies as before, and a question asked again (answered without a worker
    # thread) gets the same hits.
    first = await bundled_kb.search("what documents do I need for a home loan?", 3)
    assert first == await bundled_kb.search("what documents do I need for a home loan?", 3)
    assert await bundled_kb.search("recipe for chicken biryani", 4) == []


async def test_a_chunk_ingested_or_deleted_is_seen_by_the_next_search(
    bundled_kb: KnowledgeBase,
) -> None:
    question = "can I pledge my pet tortoise as collateral?"
    before = await bundled_kb.search(question, 1)
    text = "Pets, tortoises included, cannot be pledged as collateral for any loan."
    heading = "Collateral > Animals"
    chunk = Chunk(chunk_id("extra", "pets.md", heading, text), "extra", "pets.md", heading, text, 0)
    report = IngestReport()
    await bundled_kb.ingest_source(SourceDocument("extra", "pets.md", (chunk,)), report)
    assert report.added == 1
    found = await bundled_kb.search(question, 1)
    assert [h.chunk_id for h in found] == [chunk.chunk_id] != [h.chunk_id for h in before]
    assert found[0].text == text and found[0].source == "pets.md"
    # The same question again (its vector remembered) still sees the deletion.
    await bundled_kb.ingest_source(SourceDocument("extra", "pets.md", ()), IngestReport())
    assert chunk.chunk_id not in [h.chunk_id for h in await bundled_kb.search(question, 4, 0.0)]
    assert await bundled_kb.search(question, 1) == before


async def test_queries_waiting_together_share_a_model_call_and_get_their_own_vectors(
    embedder: MiniLMEmbedder,
) -> None:
    texts = [f"{q} (asked together {i})" for i, q in enumerate(eval_questions()[:12])]
    texts.append(texts[3].upper())  # the same query twice in one batch
    alone = [embedder.embed([text])[0] for text in texts]  # one model call each, unpadded
    calls: list[list[str]] = []

    async def embed_many(batch: list[str]) -> list[Any]:
        calls.append(batch)
        return await asyncio.to_thread(embedder.query_arrays, batch)

    batcher = QueryBatcher(embed_many, max_batch=8)
    first = asyncio.ensure_future(batcher.vector("what is the interest on a car loan (first)"))
    await asyncio.sleep(0)  # the first batch starts with one query; the rest queue behind it
    vectors = await asyncio.gather(*(batcher.vector(text) for text in texts))
    await first
    assert [len(batch) for batch in calls] == [1, 8, 5]
    for text, vector, single in zip(texts, vectors, alone, strict=True):
        assert vector.shape == (384,)
        assert max(abs(a - b) for a, b in zip(vector.tolist(), single, strict=True)) < 1e-5, text
    # A failing call fails each of its own callers, and the next batch is made all the same.
    failing = QueryBatcher(lambda batch: asyncio.sleep(0, result=[]), max_batch=8)
    with pytest.raises(ValueError):
        await failing.vector("anything")
    await batcher.close()


async def test_concurrent_searches_each_get_their_own_hits(bundled_kb: KnowledgeBase) -> None:
    texts = [f"{q} (all at once)" for q in eval_questions()[:16]]
    together = await asyncio.gather(*(bundled_kb.search(text, 3, 0.0) for text in texts))
    bundled_kb.exact = False  # Chroma's own query, with each text's remembered vector
    for text, hits in zip(texts, together, strict=True):
        expected = await bundled_kb.search(text, 3, 0.0)
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in expected], text


async def test_an_empty_collection_answers_nothing_then_what_is_ingested(
    embedder: MiniLMEmbedder, sample_folder: Path, tmp_path: Path
) -> None:
    kb = KnowledgeBase(await asyncio.to_thread(connect_chroma, tmp_path / "chroma"), embedder)
    try:
        assert await kb.search("when are branches open?", 4, floor=0.0) == []
        await ingest_paths(kb, [sample_folder])
        hits = await kb.search("when are branches open?", 1)
        assert hits[0].source == "hours.txt"
    finally:
        await kb.close()


async def test_bundled_documents_are_reingested_only_when_changed(
    bundled_kb: KnowledgeBase,
) -> None:
    total = await bundled_kb.count()
    assert await sync_bundled(bundled_kb) is None  # unchanged since the seeding run
    await bundled_kb.set_marker(BUNDLED_MARKER, "an older version")
    report = await sync_bundled(bundled_kb)
    assert report is not None
    # Content hashes make the redo cheap: nothing is embedded again, nothing duplicated.
    assert (report.added, report.unchanged, report.removed) == (0, total, 0)
    assert await bundled_kb.count() == total
    assert await sync_bundled(bundled_kb) is None


# -- the turn pipeline -----------------------------------------------------------------------------


def runtime_settings(data: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data,
        "embedding_model_dir": MODEL_DIR,
        **overrides,
    }
    return load_settings(**values)


async def ask(service: ConversationService, text: str, n: int, chat: str = "c1") -> Inbound:
    inbound = Inbound(channel="test", chat_key=chat, sender_id="u1", text=text, event_id=str(n))
    await service.handle(inbound)
    return inbound


async def test_chat_turns_answer_from_the_knowledge_base_with_citations(
    seeded_chroma: Path, tmp_path: Path
) -> None:
    settings = runtime_settings(data_dir_with_kb(seeded_chroma, tmp_path))
    async with open_runtime(settings, scheduler=False) as runtime:
        assert runtime.knowledge is not None and runtime.knowledge_problem is None
        port = RecordingPort()
        runtime.service.register_channel("test", port)
        await ask(runtime.service, "what documents do I need for a home loan?", 1)
        await ask(runtime.service, "what is the capital of France?", 2)
        await ask(runtime.service, "can I close it early?", 3)

        documents, unknown, foreclosure = (reply for _, reply in port.sent)
        assert documents.text.startswith("From home-loan.md, Documents required:")
        assert "PAN card" in documents.text and "How much would you like to borrow?" in (
            documents.text
        )
        assert [(c.source, c.heading) for c in documents.citations] == [
            ("home-loan.md", "Home Loan > Documents required")
        ]
        assert "don't have a reliable answer" in unknown.text and "advisor" in unknown.text
        assert unknown.citations == ()
        # Mid-quote, "it" is the home loan: the answer comes from the home loan document.
        assert foreclosure.citations[0].source == "home-loan.md"
        assert "foreclos" in foreclosure.text.lower()

        async with runtime.db.transaction() as session:
            rows = (
                await session.scalars(
                    select(Message).where(Message.direction == "out").order_by(Message.id)
                )
            ).all()
        stored = [row.meta.get("citations") for row in rows]
        assert stored[0] == [c.as_dict() for c in documents.citations]
        assert not stored[1]

        app = create_app(runtime, [])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ready = (await client.get("/ready")).json()
        total = await runtime.knowledge.count()
        assert ready["checks"]["knowledge"] == {
            "ok": True,
            "detail": f"{total} chunks",
            "degraded": False,
        }


async def test_without_the_model_chat_runs_without_retrieval_and_ready_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = runtime_settings(tmp_path / "data", embedding_model_dir=tmp_path / "no-model")
    async with open_runtime(settings, scheduler=False) as runtime:
        assert runtime.knowledge is None
        problem = runtime.knowledge_problem or ""
        assert "ESOTERIC_EMBEDDING_MODEL_DIR" in problem and "\n" not in problem
        assert "running without retrieval" in problem
        assert any("ESOTERIC_EMBEDDING_MODEL_DIR" in r.getMessage() for r in caplog.records)
        port = RecordingPort()
        runtime.service.register_channel("test", port)
        await ask(runtime.service, "I need a car loan", 1)
        assert port.sent[0][1].text.startswith("Great, a Car Loan.")
        app = create_app(runtime, [])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/ready")
        knowledge = response.json()["checks"]["knowledge"]
        assert knowledge["ok"] is False and knowledge["degraded"] is True
        assert "ESOTERIC_EMBEDDING_MODEL_DIR" in knowledge["detail"]


# -- a long ingestion beside chat turns ------------------------------------------------------------


@pytest.fixture
def filler() -> Iterator[SourceDocument]:
    chunks = []
    for i in range(600):
        text = f"Filler note {i}: branch {i} keeps its register in cabinet {i % 7}."
        chunks.append(
            Chunk(
                chunk_id("bulk", "filler.md", "Filler", text),
                "bulk",
                "filler.md",
                "Filler",
                text,
                i,
            )
        )
    yield SourceDocument("bulk", "filler.md", tuple(chunks))


async def test_a_long_ingestion_does_not_stall_chat_turns(
    bundled_kb: KnowledgeBase, sqlite_database: Database, filler: SourceDocument
) -> None:
    catalogue = load_catalogue()
    scripted = ScriptedAgent(
        catalogue,
        knowledge=knowledge_lookup(bundled_kb, 4, QueryExpander.for_catalogue(catalogue).expand),
    )
    service = ConversationService(sqlite_database, scripted, scripted)
    port = RecordingPort()
    service.register_channel("test", port)
    report = IngestReport()
    started = asyncio.Event()

    stored: list[int] = []

    def progress(source: str, done: int, total: int) -> None:
        stored.append(done)
        if done > 0:
            started.set()

    ingestion = asyncio.create_task(bundled_kb.ingest_source(filler, report, progress))
    try:
        await started.wait()  # the ingestion has stored its first batch and is still going
        questions = [
            "what documents do I need for a personal loan?",
            "is there a foreclosure charge on a car loan?",
            "how do I raise a complaint?",
        ]
        for n, question in enumerate(questions, 1):
            await ask(service, question, n, chat=f"chat-{n}")
        finished_during_ingestion = not ingestion.done()
        stored_when_turns_ended = stored[-1]
        await ingestion
    finally:
        ingestion.cancel()
        await service.aclose()
    assert finished_during_ingestion, "the turns waited for the ingestion"
    assert stored_when_turns_ended < len(filler.chunks)
    assert len(port.sent) == 3 and all(reply.citations for _, reply in port.sent)
    assert port.sent[0][1].citations[0].source == "personal-loan.md"
    assert report.added == 600


def test_a_question_asked_again_reuses_its_vector(embedder: MiniLMEmbedder) -> None:
    assert embedder.remembered("Which documents does a HOME loan need?") is None
    first = embedder.query_vector("Which documents does a HOME loan need?")
    kept = embedder.remembered("  which documents does a   home loan need?")
    assert kept is not None and not kept.flags.writeable
    again = embedder.query_vector("  which documents does a   home loan need?")
    # The same vector the model gives the text as typed: the tokenizer is uncased.
    assert again == first == kept.tolist()
    typed = embedder.embed(["Which documents does a HOME loan need?"])[0]
    assert max(abs(a - b) for a, b in zip(first, typed, strict=True)) < 1e-5
    # One text alone (unpadded) and the same text in a padded batch: the same vector.
    batch = embedder.embed(["Which documents does a HOME loan need?", "a longer text " * 9])
    assert max(abs(a - b) for a, b in zip(first, batch[0], strict=True)) < 1e-5


def test_without_a_copy_and_with_a_silent_network_the_model_is_refused_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A download site that accepts connections and never answers (a firewall's black hole).
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        monkeypatch.setattr(MiniLMEmbedder, "DOWNLOAD_PATH", str(tmp_path / "cache"))
        monkeypatch.setattr(
            MiniLMEmbedder, "MODEL_DOWNLOAD_URL", f"http://127.0.0.1:{port}/onnx.tar.gz"
        )
        started = time.perf_counter()
        with pytest.raises(EmbeddingUnavailable) as refused:
            load_embedder(None)
        assert time.perf_counter() - started < 2.0
        assert "cannot be reached" in str(refused.value)
    finally:
        silent.close()
