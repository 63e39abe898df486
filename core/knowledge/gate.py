"""The knowledge base as turns see it while it opens and ingests in the background.

Opening means importing Chroma and onnxruntime and loading the model (about a second), and a
fresh store's ingestion takes far longer: neither should delay answering. Until the knowledge
base is ready, every search raises ``KnowledgeNotReady`` and the agents answer as they do with
no knowledge base at all; a turn arriving while it is only opening waits for it briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from core.errors import KnowledgeError
from core.knowledge.types import Hit

if TYPE_CHECKING:
    from core.knowledge.base import KnowledgeBase

log = logging.getLogger(__name__)

# How long a search waits for a knowledge base that is being opened (not ingested).
OPEN_WAIT_SECONDS = 3.0


class KnowledgeNotReady(KnowledgeError):
    """No retrieval (yet): the knowledge base is opening, ingesting, or unavailable. Agents
    answer as without a knowledge base; it is not a failure worth a warning per turn."""


class KnowledgeGate:
    """Implements ``KnowledgeSearch`` once its knowledge base is ready."""

    def __init__(self, open_wait: float = OPEN_WAIT_SECONDS) -> None:
        self.open_wait = open_wait
        self.kb: KnowledgeBase | None = None
        self.state = "opening"  # then maybe "ingesting", then "ready" or "unavailable"
        self.problem: str | None = None
        self.done = 0
        self.total = 0
        # Set once searches need wait no longer: ready, unavailable, or embedding chunks (which
        # takes minutes on a fresh store, while an up-to-date store's check takes milliseconds).
        self._settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def floor(self) -> float:
        return self.kb.floor if self.kb is not None else 0.0

    # -- driven by the task that prepares the knowledge base ------------------------------------

    def start(self, prepare: Callable[[KnowledgeGate], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await prepare(self)
            except asyncio.CancelledError:
                raise
            except KnowledgeError as exc:
                self.unavailable(str(exc))
            except Exception as exc:  # the background task's one funnel: logged, never lost
                log.exception("preparing the knowledge base failed")
                self.unavailable(f"preparing the knowledge base failed: {type(exc).__name__}")

        self._task = asyncio.create_task(run(), name="knowledge")

    def opened(self, kb: KnowledgeBase) -> None:
        self.kb = kb

    def progress(self, done: int, total: int) -> None:
        """Chunks of the bundled documents in place, of all: an ingestion is running."""
        self.done, self.total = done, total
        self.state = "ingesting"
        self._settled.set()

    def ready(self) -> None:
        self.state = "ready"
        self.done = self.total
        self._settled.set()

    def unavailable(self, problem: str) -> None:
        self.state = "unavailable"
        self.problem = problem
        self._settled.set()

    async def wait_settled(self) -> None:
        """Until the knowledge base is ready, ingesting or known unavailable."""
        await self._settled.wait()

    async def wait_ready(self) -> None:
        """Until the preparation has finished, ready or not."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # -- what turns and /ready use ---------------------------------------------------------------

    async def search(self, query: str, k: int = 4, floor: float | None = None) -> list[Hit]:
        if self.state == "opening":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.open_wait):
                    await self._settled.wait()
        if self.state != "ready" or self.kb is None:
            raise KnowledgeNotReady(self.describe())
        return await self.kb.search(query, k, floor)

    def describe(self) -> str:
        if self.state == "ingesting":
            return f"ingesting {self.done} of {self.total} chunks"
        if self.state == "unavailable":
            return self.problem or "unavailable"
        return self.state

    async def check(self) -> tuple[bool, str]:
        """For readiness: ok only when searches use the knowledge base."""
        if self.state != "ready" or self.kb is None:
            return False, self.describe()
        return await self.kb.check()

    async def count(self) -> int:
        if self.kb is None:
            raise KnowledgeNotReady(self.describe())
        return await self.kb.count()

    async def close(self) -> None:
        """Stop a preparation still running (an ingestion resumes on the next start: its
        finished batches are kept and the bundled documents' marker is written only at the
        end), then close the knowledge base."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.kb is not None:
            await self.kb.close()
