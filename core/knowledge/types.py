"""What retrieval returns, and the one call the agents need from a knowledge base."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.messages import Citation


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    text: str
    source: str  # file name relative to the ingested root, e.g. "home-loan.md"
    heading: str  # the heading path of the chunk, e.g. "Home Loan > Documents required"
    score: float  # relevance in [0, 1], higher is better

    def citation(self) -> Citation:
        return Citation(self.source, self.heading, self.chunk_id, round(self.score, 4))


class KnowledgeSearch(Protocol):
    async def search(self, query: str, k: int = 4) -> list[Hit]:
        """The best ``k`` chunks at or above the relevance floor, best first."""
        ...


@dataclass(frozen=True)
class Section:
    """A run of document text under one heading path (empty heading: before any heading)."""

    heading: str
    text: str


@dataclass(frozen=True)
class Chunk:
    """One unit of retrieval. ``chunk_id`` hashes the content, so re-ingesting is a no-op."""

    chunk_id: str
    root: str  # what the source is relative to: a directory, or "bundled"
    source: str
    heading: str
    text: str
    position: int  # order within the source, for stable listings

    def embedding_text(self) -> str:
        # The heading path carries the product and topic; short bodies alone are ambiguous.
        return f"{self.heading}\n{self.text}" if self.heading else self.text


@dataclass(frozen=True)
class SourceStats:
    root: str
    source: str
    chunks: int


@dataclass(frozen=True)
class KnowledgeStats:
    collection: str
    location: str
    chunks: int
    sources: tuple[SourceStats, ...]
