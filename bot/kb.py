"""Opening the knowledge base from settings, and the ``esoteric kb`` commands."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bot.settings import Settings
from core.errors import KnowledgeError

if TYPE_CHECKING:
    from core.knowledge.base import KnowledgeBase
    from core.knowledge.gate import KnowledgeGate
    from core.knowledge.types import Hit

# chromadb and onnxruntime are imported on first use: they take seconds to import, which every
# command would otherwise pay, with or without a knowledge base.

MODEL_SETTING = "ESOTERIC_EMBEDDING_MODEL_DIR"

log = logging.getLogger("esoteric.knowledge")


def chroma_location(settings: Settings) -> str:
    return settings.chroma_url or str((settings.data_dir / "chroma").resolve())


async def open_knowledge(settings: Settings) -> KnowledgeBase:
    """The knowledge base the settings describe, or one ``KnowledgeError`` line saying why not."""
    from core.knowledge.base import KnowledgeBase, connect_chroma
    from core.knowledge.embedding import EmbeddingUnavailable, load_embedder

    try:
        embedder = await asyncio.to_thread(load_embedder, settings.embedding_model_dir)
    except EmbeddingUnavailable as exc:
        hint = (
            f"check {MODEL_SETTING}"
            if settings.embedding_model_dir
            else f"set {MODEL_SETTING} to a folder holding onnx/ of all-MiniLM-L6-v2"
        )
        raise KnowledgeError(f"embedding model unavailable ({exc}); {hint}") from exc
    path = None if settings.chroma_url else settings.data_dir / "chroma"
    client = await asyncio.to_thread(connect_chroma, path, settings.chroma_url)
    kb = KnowledgeBase(
        client, embedder, floor=settings.knowledge_min_score, location=chroma_location(settings)
    )
    try:
        await kb.open()
    except BaseException:
        await kb.close()
        raise
    return kb


# -- progress ------------------------------------------------------------------------------------


class IngestProgress:
    """A redrawn bar on a terminal; one plain line per finished file when piped."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._drawn = False

    def __call__(self, source: str, done: int, total: int) -> None:
        if self.tty:
            width = 30
            filled = width * done // total if total else width
            bar = "#" * filled + "-" * (width - filled)
            self.out.write(f"\r\x1b[K[{bar}] {done}/{total} {source}")
            self._drawn = True
            if done >= total:
                self.out.write("\n")
                self._drawn = False
        elif done >= total:
            self.out.write(f"ingested {source}: {total} chunks\n")
        self.out.flush()

    def error(self, message: str) -> None:
        if self._drawn:
            self.out.write("\n")
            self._drawn = False
        print(f"esoteric: skipped {message}", file=sys.stderr, flush=True)


# -- commands ------------------------------------------------------------------------------------


async def ingest_command(settings: Settings, paths: Sequence[Path], bundled: bool) -> int:
    if not paths and not bundled:
        raise KnowledgeError("give at least one file or folder to ingest (or --bundled)")
    from core.knowledge.ingest import ingest_paths, sync_bundled

    progress = IngestProgress(sys.stdout)
    started = time.perf_counter()
    kb = await open_knowledge(settings)
    try:
        if settings.chroma_url is None and not bundled:
            # As chat would: the embedded default always holds the bundled documents.
            await sync_bundled(kb)
        report = await ingest_paths(kb, paths, progress, progress.error)
        if bundled:
            await kb.set_marker("bundled_sha256", "")  # force: the operator asked for it
            bundled_report = await sync_bundled(kb, progress)
            if bundled_report is not None:
                report.files += bundled_report.files
                report.added += bundled_report.added
                report.unchanged += bundled_report.unchanged
                report.removed += bundled_report.removed
        total = await kb.count()
    finally:
        await kb.close()
    elapsed = time.perf_counter() - started
    print(
        f"{report.files} file(s): {report.added} chunks added, {report.unchanged} unchanged, "
        f"{report.removed} removed; {len(report.errors)} failed; {total} chunks in "
        f"{chroma_location(settings)} ({elapsed:.1f}s)"
    )
    return 1 if report.errors else 0


async def open_with_bundled(settings: Settings) -> KnowledgeBase:
    """The knowledge base as chat and serve see it: on the embedded default, the bundled
    documents are taken in first whenever they changed (a no-op once they are in)."""
    kb = await open_knowledge(settings)
    if settings.chroma_url is not None:
        return kb
    from core.knowledge.ingest import sync_bundled

    try:
        await sync_bundled(kb)
    except BaseException:
        await kb.close()
        raise
    return kb


async def query_command(settings: Settings, text: str, k: int, as_json: bool = False) -> int:
    if not text.strip():
        raise KnowledgeError("give the question to search for")
    from core.catalogue import load_catalogue
    from core.knowledge.query import QueryExpander

    # The same expansion chat turns use, so this shows what a customer's question retrieves.
    query = QueryExpander.for_catalogue(load_catalogue()).expand(text)
    if query != text and not as_json:
        print(f"query: {query}")
    kb = await open_with_bundled(settings)
    try:
        hits = await kb.search(query, k, floor=0.0)
    finally:
        await kb.close()
    if as_json:
        print(json.dumps(_json_hits(text, query, hits, kb.floor), ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("no chunks in the knowledge base; run `esoteric kb ingest PATH...` first")
        return 0
    for rank, hit in enumerate(hits, 1):
        marker = "" if hit.score >= kb.floor else "  (below the relevance floor)"
        print(
            f"{rank}. score {hit.score:.3f}  {hit.source} > {hit.heading or '(no heading)'}{marker}"
        )
        snippet = " ".join(hit.text.split())
        print(f"   {snippet[:200]}{'...' if len(snippet) > 200 else ''}")
    return 0


def _json_hits(text: str, query: str, hits: Sequence[Hit], floor: float) -> dict[str, Any]:
    """``kb query --json``: every hit whole, for scripts."""
    return {
        "question": text,
        "query": query,
        "floor": floor,
        "hits": [
            {
                "rank": rank,
                "score": round(hit.score, 4),
                "source": hit.source,
                "heading": hit.heading,
                "chunk_id": hit.chunk_id,
                "below_floor": hit.score < floor,
                "text": hit.text,
            }
            for rank, hit in enumerate(hits, 1)
        ],
    }


async def stats_command(settings: Settings) -> int:
    kb = await open_with_bundled(settings)
    try:
        stats = await kb.stats()
    finally:
        await kb.close()
    print(f"collection {stats.collection} at {stats.location}: {stats.chunks} chunks")
    for item in stats.sources:
        print(f"  {item.chunks:5d}  {item.source}  ({item.root})")
    return 0


async def knowledge_for_runtime(settings: Settings) -> tuple[KnowledgeBase | None, str | None]:
    """The knowledge base for chat and serve, or ``(None, why)``: the bot then runs without
    retrieval. The embedded default takes in the bundled documents whenever they changed."""
    try:
        kb = await open_knowledge(settings)
    except KnowledgeError as exc:
        problem = f"knowledge base unavailable, running without retrieval: {exc}"
        log.warning(problem)
        return None, problem
    if settings.chroma_url is None:
        from core.knowledge.ingest import sync_bundled

        try:
            report = await sync_bundled(kb)
        except KnowledgeError as exc:
            await kb.close()
            problem = f"knowledge base unavailable, running without retrieval: {exc}"
            log.warning(problem)
            return None, problem
        except BaseException:
            await kb.close()
            raise
        if report is not None:
            log.info("bundled knowledge base: %d chunks stored", report.added + report.unchanged)
    else:
        await _warn_if_empty(kb, settings)
    return kb, None


async def _warn_if_empty(kb: KnowledgeBase, settings: Settings) -> None:
    try:
        empty = await kb.count() == 0
    except KnowledgeError:
        empty = False  # reported by /ready; lookups fail soft meanwhile
    if empty:
        # A shared server is never filled implicitly; say how to fill it.
        log.warning(
            "the knowledge base at %s is empty; run `esoteric kb ingest --bundled` "
            "(and your own documents)",
            settings.chroma_url,
        )


async def prepare_knowledge(settings: Settings, gate: KnowledgeGate) -> None:
    """``esoteric serve``'s knowledge base, opened and (on the embedded default) brought up to
    date with the bundled documents in the background, reporting to ``gate`` as it goes.
    Raises ``KnowledgeError`` when there is none; the gate then says why."""
    # Importing chromadb and onnxruntime takes most of a second: not on the event loop, which
    # is already answering.
    await asyncio.to_thread(importlib.import_module, "core.knowledge.base")
    try:
        kb = await open_knowledge(settings)
    except KnowledgeError as exc:
        problem = f"knowledge base unavailable, running without retrieval: {exc}"
        log.warning(problem)
        raise KnowledgeError(problem) from exc
    gate.opened(kb)
    if settings.chroma_url is None:
        from core.knowledge.ingest import sync_bundled

        try:
            report = await sync_bundled(kb, overall=gate.progress)
        except KnowledgeError as exc:
            problem = f"knowledge base unavailable, running without retrieval: {exc}"
            log.warning(problem)
            raise KnowledgeError(problem) from exc
        if report is not None:
            log.info("bundled knowledge base: %d chunks stored", report.added + report.unchanged)
        await _warm(kb)
    else:
        await _warn_if_empty(kb, settings)
    gate.ready()


async def _warm(kb: KnowledgeBase) -> None:
    """One search before the first customer's: the embedded store's first search reads every
    chunk into its memory copy, and the reading's temporary memory (about 10 of its 24 MiB) is
    freed but kept by the C allocator unless asked to give it back."""
    with contextlib.suppress(KnowledgeError):
        await kb.search("loan", 1)
    await asyncio.to_thread(release_free_memory)
    # From here on questions are answered from the memory copy: Chroma's native library
    # runs again only if documents are ingested (and its pages then come back as it runs).
    await asyncio.to_thread(drop_library_pages, CHROMA_NATIVE)


def _glibc(name: str) -> Any | None:
    """A function of the C library's allocator, or None where there is none (not glibc)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None


# glibc's M_ARENA_MAX: how many C heaps (arenas) threads may spread over.
_M_ARENA_MAX = -8
SERVER_MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = SERVER_MALLOC_ARENAS) -> None:
    """Let the process's threads share ``arenas`` C heaps (glibc; elsewhere a no-op). By
    default each thread that allocates may get a heap of its own, up to eight per core, and
    each keeps its freed memory: a Telegram burst measured 3-4 MiB more peak memory with the
    default (``bench/memory.py``). Call it first, before other threads start."""
    mallopt = _glibc("mallopt")
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere a no-op)."""
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


_MADV_PAGEOUT = 21  # Linux 5.4 and later
# The embedded Chroma's compiled library (the module chromadb's Rust API loads).
CHROMA_NATIVE = "chromadb_rust_bindings.chromadb_rust_bindings"


def drop_library_pages(module: str) -> int:
    """Ask the kernel to reclaim now the resident pages of ``module``'s native library file (a
    compiled extension), and return how many bytes of mappings it accepted (0 where it cannot:
    not Linux, an older kernel, no such module). The pages are the file's own, not the heap's,
    and any the process still runs are read back on their next use: what this drops is the
    library's startup and ingestion code, resident until the kernel needs the memory, which
    it would otherwise count in this process's RSS for good (18 MiB for Chroma's). Pages
    another process maps too (several processes from one installation) stay: the kernel takes
    only this process's own, and shared ones are one copy for all of them anyway."""
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None)
    madvise = _glibc("madvise")
    if path is None or madvise is None or not sys.platform.startswith("linux"):
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    real = str(Path(path).resolve())
    accepted = 0
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] != real:
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if madvise(start, end - start, _MADV_PAGEOUT) == 0:
            accepted += end - start
    return accepted
