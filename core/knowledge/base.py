"""The knowledge base: chunks and their embeddings in one Chroma collection.

Every Chroma and embedding call is synchronous, so each runs in a worker thread; ingestion goes
in small batches so that searches from chat turns interleave with a long ingestion.

On embedded Chroma, searches do not go through Chroma: a copy of the collection's vectors,
texts and headings is kept in memory (1,000 chunks: 1.5 MiB of vectors) and searched exactly
with one matrix product. Chroma's query cost more than a millisecond of CPU per question in its
own threads, and its HNSW index is approximate. Embedded Chroma belongs to this process (another
process's writes do not reach this process's Chroma queries either), so the copy is rebuilt
after this process's own writes only. A Chroma server is shared and re-ingested by other
processes: it is always asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings as ChromaSettings

from core.errors import KnowledgeError
from core.knowledge.batcher import QueryBatcher
from core.knowledge.embedding import MiniLMEmbedder
from core.knowledge.types import Chunk, Hit, KnowledgeStats, SourceStats

log = logging.getLogger(__name__)

COLLECTION = "esoteric-knowledge"
DEFAULT_FLOOR = 0.30
BATCH = 32
# Past this many chunks the memory copy would cost more than it saves (20,000: 30 MiB of
# vectors): searches go to Chroma's index instead.
EXACT_MAX_CHUNKS = 20_000
# Chunks read per call while copying the collection: Chroma's reading of a page costs several
# times the page's size, and it is not all given back (1,000 chunks read in one call left the
# serving process 20 MiB larger, at a 29 MiB peak; in pages of 50, 8 MiB; no slower).
COPY_PAGE = 50


class KnowledgeUnavailable(KnowledgeError):
    """Chroma cannot be reached or refused an operation."""


def connect_chroma(path: Path | None = None, url: str | None = None) -> ClientAPI:
    """An embedded client under ``path``, or a client of the Chroma server at ``url``.
    Blocking: call it off the event loop."""
    settings = ChromaSettings(anonymized_telemetry=False)
    try:
        if url:
            from urllib.parse import urlsplit

            parts = urlsplit(url)
            ssl = parts.scheme == "https"
            port = parts.port or (443 if ssl else 8000)
            client = chromadb.HttpClient(
                host=parts.hostname or "localhost", port=port, ssl=ssl, settings=settings
            )
            client.heartbeat()
            return client
        if path is None:
            raise KnowledgeUnavailable("no Chroma path or URL given")
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=settings)
    except KnowledgeError:
        raise
    except Exception as exc:  # chromadb raises assorted client and transport errors
        where = url or str(path)
        raise KnowledgeUnavailable(f"cannot open Chroma at {where}: {exc}") from exc


@dataclass(frozen=True)
class SourceDocument:
    """The chunks of one file, ready to replace whatever that file contributed before."""

    root: str
    source: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class _Vectors:
    """A memory copy of the collection for exact cosine search: unit rows, one per chunk."""

    generation: int
    matrix: Any  # float32, chunks x dimensions; None: too many chunks, ask Chroma's index
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    sources: tuple[str, ...]
    headings: tuple[str, ...]

    def top(self, vector: Any, k: int, floor: float) -> list[Hit]:
        count = len(self.ids)
        if count == 0 or k <= 0:
            return []
        scores = self.matrix @ vector
        if k < count:
            best = np.argpartition(-scores, k - 1)[:k]
            best = best[np.argsort(-scores[best], kind="stable")]
        else:
            best = np.argsort(-scores, kind="stable")
        hits = []
        for i in best.tolist():
            score = max(0.0, min(1.0, float(scores[i])))
            if score < floor:
                break
            hits.append(Hit(self.ids[i], self.texts[i], self.sources[i], self.headings[i], score))
        return hits


def _in_process(client: ClientAPI) -> bool:
    """Whether the client is embedded Chroma (not a client of a Chroma server)."""
    try:
        impl = str(client.get_settings().chroma_api_impl)
    except Exception:  # an unknown client: treat it as shared
        return False
    return impl.rsplit(".", 1)[-1] in {"RustBindingsAPI", "SegmentAPI"}


@dataclass
class IngestReport:
    files: int = 0
    added: int = 0  # chunks embedded and stored
    unchanged: int = 0  # chunks already present with the same content
    removed: int = 0  # stale chunks of changed or removed files
    errors: list[str] = field(default_factory=list)


Progress = Callable[[str, int, int], None]  # source, chunks done, chunks in that source


class KnowledgeBase:
    """Implements ``KnowledgeSearch`` over one Chroma collection."""

    def __init__(
        self,
        client: ClientAPI,
        embedder: MiniLMEmbedder,
        *,
        collection: str = COLLECTION,
        floor: float = DEFAULT_FLOOR,
        location: str = "",
    ) -> None:
        self.client = client
        self.embedder = embedder
        self.floor = floor
        self.location = location
        self.name = collection
        self._collection: Collection | None = None
        # Seen to hold chunks (so a search need not count them first, a third of a cached
        # query's time); forgotten whenever chunks are deleted. A server that another process
        # empties answers an empty search, which is harmless.
        self._has_chunks = False
        # Exact search on a memory copy (embedded Chroma only; see the module's docstring).
        # Each write moves the generation on, before and after, so a copy read while a write
        # ran is never kept.
        self.exact = _in_process(client)
        self._generation = 0
        self._vectors: _Vectors | None = None
        self._copy_lock = threading.Lock()
        self._batcher = QueryBatcher(self._embed_queries)

    # -- plumbing ----------------------------------------------------------------------------

    def _coll(self) -> Collection:
        if self._collection is None:
            # Vectors are computed here, not by Chroma, so the collection keeps no function;
            # cosine distance makes 1 - distance a similarity in [-1, 1].
            self._collection = self.client.get_or_create_collection(
                self.name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
            )
        return self._collection

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        call = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            # The thread runs on regardless: let it finish (an upsert is one Chroma transaction)
            # before whatever follows the cancellation, such as closing the client.
            with contextlib.suppress(Exception):
                await call
            raise
        except KnowledgeError:
            raise
        except Exception as exc:  # chromadb raises assorted client and transport errors
            raise KnowledgeUnavailable(f"Chroma failed: {type(exc).__name__}: {exc}") from exc

    async def _embed_queries(self, texts: list[str]) -> list[Any]:
        vectors: list[Any] = await self._call(self.embedder.query_arrays, texts)
        return vectors

    async def open(self) -> None:
        await self._call(self._coll)

    async def close(self) -> None:
        await self._batcher.close()
        close = getattr(self.client, "close", None)
        if close is not None:
            await self._call(close)

    # -- retrieval ---------------------------------------------------------------------------

    def _search_sync(self, vector: Any, k: int, floor: float) -> list[Hit]:
        """Chroma's own query (a server, or a collection too large to copy)."""
        coll = self._coll()
        if not self._has_chunks:
            if coll.count() == 0:
                return []
            self._has_chunks = True
        found = coll.query(
            query_embeddings=[vector.tolist()],
            n_results=k,
            include=["documents", "metadatas", "distances"],
        )
        hits: list[Hit] = []
        ids = found["ids"][0]
        docs = (found.get("documents") or [[]])[0]
        metas = (found.get("metadatas") or [[]])[0]
        dists = (found.get("distances") or [[]])[0]
        for cid, doc, meta, dist in zip(ids, docs, metas, dists, strict=True):
            score = max(0.0, min(1.0, 1.0 - float(dist)))
            if score < floor:
                continue
            meta = meta or {}
            hits.append(
                Hit(
                    cid, doc or "", str(meta.get("source", "")), str(meta.get("heading", "")), score
                )
            )
        return hits

    def _exact_search(self, vectors: _Vectors, vector: Any, k: int, floor: float) -> list[Hit]:
        return vectors.top(vector, k, floor)

    def _fresh_copy(self) -> _Vectors | None:
        vectors = self._vectors
        return vectors if vectors is not None and vectors.generation == self._generation else None

    def _copy(self) -> _Vectors:
        """The memory copy, read from Chroma if a write made it stale; without a matrix when
        the collection is too large for one (search Chroma's index then)."""
        vectors = self._fresh_copy()
        if vectors is not None:
            return vectors
        with self._copy_lock:  # one thread reads the collection; the others wait for it
            vectors = self._fresh_copy()
            if vectors is not None:
                return vectors
            generation = self._generation
            coll = self._coll()
            if coll.count() > EXACT_MAX_CHUNKS:
                vectors = _Vectors(generation, None, (), (), (), ())
                if generation == self._generation:
                    self._vectors = vectors
                return vectors
            ids: list[str] = []
            texts: list[str] = []
            sources: list[str] = []
            headings: list[str] = []
            rows: list[Any] = []
            while True:
                got = coll.get(
                    include=["embeddings", "documents", "metadatas"],
                    limit=COPY_PAGE,
                    offset=len(ids),
                )
                if not got["ids"]:
                    break
                ids += got["ids"]
                texts += [d or "" for d in got.get("documents") or []]
                for meta in got.get("metadatas") or []:
                    sources.append(str((meta or {}).get("source", "")))
                    headings.append(str((meta or {}).get("heading", "")))
                rows.append(np.asarray(got.get("embeddings"), dtype=np.float32))
                if len(got["ids"]) < COPY_PAGE:
                    break
            matrix = np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
            if len(matrix):
                # Chroma's cosine space compares unit vectors; ours already are, to rounding.
                matrix /= np.clip(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12, None)
            vectors = _Vectors(
                generation, matrix, tuple(ids), tuple(texts), tuple(sources), tuple(headings)
            )
            if generation == self._generation:
                self._vectors = vectors
            return vectors

    def _written(self) -> None:
        with self._copy_lock:
            self._generation += 1
            self._vectors = None

    async def search(self, query: str, k: int = 4, floor: float | None = None) -> list[Hit]:
        """The best ``k`` chunks at or above the relevance floor, best first."""
        query = query.strip()
        if not query:
            return []
        floor = self.floor if floor is None else floor
        vectors = None
        if self.exact:
            vectors = self._fresh_copy() or await self._call(self._copy)
            if vectors.matrix is not None and not vectors.ids:
                return []
        # A question asked before costs no model call and no worker thread.
        vector = self.embedder.remembered(query)
        if vector is None:
            vector = await self._batcher.vector(query)
        if vectors is not None and vectors.matrix is not None:
            # A matrix product of a few tens of microseconds: cheaper here than the hop to a
            # worker thread and back.
            return self._exact_search(vectors, vector, k, floor)
        hits: list[Hit] = await self._call(self._search_sync, vector, k, floor)
        return hits

    # -- ingestion ---------------------------------------------------------------------------

    def _existing_ids(self, root: str, source: str | None = None) -> dict[str, str]:
        """Chunk id -> source for what ``root`` (or one of its sources) holds now."""
        where: dict[str, Any] = {"root": root}
        if source is not None:
            where = {"$and": [{"root": root}, {"source": source}]}
        got = self._coll().get(where=where, include=["metadatas"])
        metas = got.get("metadatas") or [{} for _ in got["ids"]]
        return {
            cid: str((m or {}).get("source", "")) for cid, m in zip(got["ids"], metas, strict=True)
        }

    def _upsert_sync(self, chunks: Sequence[Chunk]) -> None:
        vectors = self.embedder.embed([c.embedding_text() for c in chunks])
        self._written()
        try:
            self._upsert_chroma(chunks, vectors)
        finally:
            self._written()

    def _upsert_chroma(self, chunks: Sequence[Chunk], vectors: list[list[float]]) -> None:
        self._coll().upsert(
            ids=[c.chunk_id for c in chunks],
            embeddings=vectors,  # type: ignore[arg-type]
            documents=[c.text for c in chunks],
            metadatas=[
                {"root": c.root, "source": c.source, "heading": c.heading, "position": c.position}
                for c in chunks
            ],
        )

    def _delete_sync(self, ids: list[str]) -> None:
        self._has_chunks = False
        if ids:
            self._written()
            try:
                self._coll().delete(ids=ids)
            finally:
                self._written()

    async def ingest_source(
        self, doc: SourceDocument, report: IngestReport, progress: Progress | None = None
    ) -> None:
        """Make the collection hold exactly ``doc.chunks`` for this source: new chunks are
        embedded and stored, unchanged ones kept, stale ones deleted."""
        existing = await self._call(self._existing_ids, doc.root, doc.source)
        wanted = {c.chunk_id for c in doc.chunks}
        fresh = [c for c in doc.chunks if c.chunk_id not in existing]
        total = len(doc.chunks)
        done = total - len(fresh)
        if progress:
            progress(doc.source, done, total)
        for start in range(0, len(fresh), BATCH):
            batch = fresh[start : start + BATCH]
            await self._call(self._upsert_sync, batch)
            done += len(batch)
            if progress:
                progress(doc.source, done, total)
        stale = [cid for cid in existing if cid not in wanted]
        await self._call(self._delete_sync, stale)
        report.files += 1
        report.added += len(fresh)
        report.unchanged += total - len(fresh)
        report.removed += len(stale)

    async def prune(self, root: str, keep_sources: Iterable[str], report: IngestReport) -> None:
        """Delete chunks of ``root``'s files that no longer exist."""
        keep = set(keep_sources)
        existing: dict[str, str] = await self._call(self._existing_ids, root)
        stale = [cid for cid, source in existing.items() if source not in keep]
        await self._call(self._delete_sync, stale)
        report.removed += len(stale)

    # -- bookkeeping -------------------------------------------------------------------------

    def _metadata_sync(self) -> dict[str, Any]:
        return dict(self._coll().metadata or {})

    async def get_marker(self, key: str) -> str | None:
        meta = await self._call(self._metadata_sync)
        value = meta.get(key)
        return str(value) if value is not None else None

    def _set_marker_sync(self, key: str, value: str) -> None:
        coll = self._coll()
        meta = dict(coll.metadata or {})
        meta[key] = value
        coll.modify(metadata=meta)

    async def set_marker(self, key: str, value: str) -> None:
        """Remember a value with the collection (e.g. the hash of the bundled documents)."""
        await self._call(self._set_marker_sync, key, value)

    def _stats_sync(self) -> KnowledgeStats:
        got = self._coll().get(include=["metadatas"])
        counts: dict[tuple[str, str], int] = {}
        for meta in got.get("metadatas") or []:
            key = (str((meta or {}).get("root", "")), str((meta or {}).get("source", "")))
            counts[key] = counts.get(key, 0) + 1
        sources = tuple(SourceStats(r, s, n) for (r, s), n in sorted(counts.items()))
        return KnowledgeStats(self.name, self.location, len(got["ids"]), sources)

    async def stats(self) -> KnowledgeStats:
        stats: KnowledgeStats = await self._call(self._stats_sync)
        return stats

    async def count(self) -> int:
        return int(await self._call(lambda: self._coll().count()))

    async def check(self) -> tuple[bool, str]:
        """For readiness: the collection answers, and how many chunks it holds."""
        try:
            chunks = await self.count()
        except KnowledgeError as exc:
            return False, str(exc)
        return True, f"{chunks} chunks"
