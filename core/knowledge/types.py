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
