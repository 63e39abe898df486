"""Hindi (Devanagari) and Hinglish questions through the bot's knowledge path: the bundled
knowledge base on embedded Chroma with the real MiniLM model, the query expander and
``knowledge_lookup`` at the default relevance floor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.catalogue import load_catalogue
from core.knowledge.answer import knowledge_lookup
from core.knowledge.base import DEFAULT_FLOOR, KnowledgeBase, connect_chroma
from core.knowledge.embedding import MiniLMEmbedder, load_embedder
from core.knowledge.ingest import sync_bundled
from core.knowledge.query import QueryExpander
from tests.conftest import MODEL_DIR


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return load_embedder(MODEL_DIR)


@pytest.fixture(scope="module")
def seeded_chroma(embedder: MiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled documents ingested once for the module (the store is only read here)."""
    path = tmp_path_factory.mktemp("languages") / "chroma"

    async def seed() -> None:
        kb = KnowledgeBase(await asyncio.to_thread(connect_chroma, path), embedder)
        try:
            assert await sync_bundled(kb) is not None
        finally:
            await kb.close()

    asyncio.run(seed())
    return path


@pytest.fixture
async def bundled_kb(seeded_chroma: Path, embedder: MiniLMEmbedder) -> AsyncIterator[KnowledgeBase]:
    kb = KnowledgeBase(await asyncio.to_thread(connect_chroma, seeded_chroma), embedder)
    await kb.open()
    try:
        yield kb
    finally:
        await kb.close()


@pytest.fixture(scope="module")
def expand() -> QueryExpander:
    return QueryExpander.for_catalogue(load_catalogue())


@pytest.mark.parametrize(
    ("question", "sections"),
    [
        ("होम लोन के लिए कौन से दस्तावेज़ चाहिए?", {"Home Loan > Documents required"}),
        ("गाड़ी लोन के लिए कौन कौन से कागज़ात लगेंगे", {"Car Loan > Documents required"}),
        ("शिकायत कहाँ करें", {"Grievance redress > How to raise a complaint"}),
        ("कार लोन की ब्याज दर क्या है", {"Car Loan > Interest rate", "Car Loan > Key facts"}),
        (
            "अगर एक ईएमआई छूट जाए तो क्या होगा",
            {"Frequently asked questions > What happens if I miss an EMI?"},
        ),
        ("gaadi loan ke liye kaun se documents lagenge", {"Car Loan > Documents required"}),
        ("shikayat kaha karu", {"Grievance redress > How to raise a complaint"}),
        (
            "ek emi miss ho gayi to kya hoga",
            {"Frequently asked questions > What happens if I miss an EMI?"},
        ),
        ("padhai ke loan pe tax benefit milta hai kya", {"Education Loan > Tax benefit"}),
    ],
)
async def test_hindi_and_hinglish_questions_are_answered_from_the_right_section(
    bundled_kb: KnowledgeBase, expand: QueryExpander, question: str, sections: set[str]
) -> None:
    lookup = knowledge_lookup(bundled_kb, 4, expand.expand)
    answer = await lookup(question)
    assert answer is not None, "below the relevance floor: the bot would not answer"
    _, citations = answer
    assert citations[0].heading in sections


async def test_without_expansion_a_devanagari_question_finds_nothing_useful(
    bundled_kb: KnowledgeBase,
) -> None:
    """Why the expansion exists: the English model cannot read Devanagari."""
    hits = await bundled_kb.search("होम लोन के लिए कौन से दस्तावेज़ चाहिए?", 3, floor=0.0)
    assert ("home-loan.md", "Home Loan > Documents required") not in [
        (h.source, h.heading) for h in hits
    ]


@pytest.mark.parametrize(
    "question",
    [
        "कल मौसम कैसा रहेगा",
        "बिरयानी कैसे बनाते हैं",
        "kal mausam kaisa rahega",
        "koi accha sa gaana sunao",
    ],
)
async def test_off_topic_hindi_and_hinglish_stay_below_the_floor(
    bundled_kb: KnowledgeBase, expand: QueryExpander, question: str
) -> None:
    assert bundled_kb.floor == DEFAULT_FLOOR
    assert await knowledge_lookup(bundled_kb, 4, expand.expand)(question) is None
