"""Queries that wait for the embedding model at the same time share one model call.

One query alone costs onnxruntime about a third more CPU than each of a few embedded together,
and turns from different chats often arrive together. The first query starts a batch; queries
arriving while that batch is queued or running wait for the next one, which starts as soon as
the running batch ends. No query waits on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

# The most queries in one call. Past four, CPU per query gains nothing more here (9.2-10.6 ms
# per short query at 4, 8 and 16 on a 2-core AVX2 machine; 10.6 at 2, 11.7-13.5 alone), while
# onnxruntime's memory arena grows with the batch and keeps what it took: under a Telegram
# burst (bench/memory.py, 100 chats) peak RSS was 278/286 MiB at 16, 279/284 at 8, 272/280 at 4.
MAX_BATCH = 4

EmbedMany = Callable[[list[str]], Awaitable[list[Any]]]


class QueryBatcher:
    """Coalesces concurrent ``vector`` calls into calls of ``embed_many`` (each gets exactly
    its own text's vector, in order)."""

    def __init__(self, embed_many: EmbedMany, max_batch: int = MAX_BATCH) -> None:
        self._embed_many = embed_many
        self.max_batch = max_batch
        self._waiting: list[tuple[str, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.calls = 0  # model calls made, for benchmarks

    async def vector(self, text: str) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((text, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="embedding batches")
        # A cancelled caller leaves its slot in the batch; the batch itself carries on.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                self.calls += 1
                try:
                    vectors = await self._embed_many([text for text, _ in batch])
                    if len(vectors) != len(batch):
                        raise ValueError(f"{len(vectors)} vectors for {len(batch)} queries")
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:  # each waiting caller gets the failure as its own
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), vector in zip(batch, vectors, strict=True):
                    if not future.done():
                        future.set_result(vector)
        finally:
            self._task = None
            for _, future in self._waiting:  # only when cancelled: nobody would serve them
                future.cancel()
            self._waiting.clear()

    async def close(self) -> None:
        """Finish the batch in flight (its model call cannot be stopped midway)."""
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
