"""Ingesting files and folders, and keeping the bundled knowledge base in step with the package."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from core.knowledge.base import IngestReport, KnowledgeBase, Progress, SourceDocument
from core.knowledge.chunking import chunk_sections
from core.knowledge.documents import SUPPORTED_SUFFIXES, DocumentError, markdown_sections
from core.knowledge.documents import read_sections as _read_sections

log = logging.getLogger(__name__)

BUNDLED_ROOT = "bundled"
BUNDLED_MARKER = "bundled_sha256"


@dataclass(frozen=True)
class FileToIngest:
    root: str
    source: str
    path: Path


@dataclass(frozen=True)
class Collected:
    files: tuple[FileToIngest, ...]
    # Folders whose full file list is known, so chunks of files gone from them can be removed.
    complete_roots: dict[str, tuple[str, ...]]
    errors: tuple[str, ...]


def collect(paths: Sequence[Path]) -> Collected:
    """Expand folders (recursively, supported types only, hidden files skipped) and check that
    named paths exist. A named file is ingested relative to its folder."""
    files: list[FileToIngest] = []
    roots: dict[str, tuple[str, ...]] = {}
    errors: list[str] = []
    for path in paths:
        if path.is_dir():
            root = path.resolve()
            found = sorted(
                p
                for p in root.rglob("*")
                if p.is_file()
                and p.suffix.lower() in SUPPORTED_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
            sources = tuple(p.relative_to(root).as_posix() for p in found)
            roots[str(root)] = sources
            files.extend(FileToIngest(str(root), s, p) for s, p in zip(sources, found, strict=True))
        elif path.exists():
            resolved = path.resolve()
            files.append(FileToIngest(str(resolved.parent), resolved.name, resolved))
        else:
            errors.append(f"{path}: no such file or folder")
    return Collected(tuple(files), roots, tuple(errors))


def document_from_file(item: FileToIngest) -> SourceDocument:
    """Read and chunk one file (blocking). Raises ``DocumentError``."""
    sections = _read_sections(item.path)
    return SourceDocument(
        item.root, item.source, tuple(chunk_sections(item.root, item.source, sections))
    )


async def ingest_paths(
    kb: KnowledgeBase,
    paths: Sequence[Path],
    progress: Progress | None = None,
    on_error: Callable[[str], None] | None = None,
) -> IngestReport:
    """Ingest every file under ``paths``; a bad file is reported and the rest still go in."""
    report = IngestReport()

    def fail(message: str) -> None:
        report.errors.append(message)
        if on_error:
            on_error(message)

    collected = await asyncio.to_thread(collect, paths)
    for message in collected.errors:
        fail(message)
    for item in collected.files:
        try:
            doc = await asyncio.to_thread(document_from_file, item)
        except DocumentError as exc:
            fail(str(exc))
            continue
        await kb.ingest_source(doc, report, progress)
    for root, sources in collected.complete_roots.items():
        await kb.prune(root, sources, report)
    return report


# -- the bundled knowledge base ----------------------------------------------------------------


def bundled_documents() -> list[tuple[str, str]]:
    """(file name, markdown) for each document shipped in ``core/data/knowledge``."""
    folder = resources.files("core").joinpath("data/knowledge")
    docs = [
        (entry.name, entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".md") and entry.is_file()
    ]
    return sorted(docs)


def bundled_hash(docs: Sequence[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for name, text in docs:
        digest.update(name.encode() + b"\x00" + text.encode() + b"\x00")
    return digest.hexdigest()


def bundled_source_documents(docs: Sequence[tuple[str, str]]) -> list[SourceDocument]:
    return [
        SourceDocument(
            BUNDLED_ROOT,
            name,
            tuple(chunk_sections(BUNDLED_ROOT, name, markdown_sections(text))),
        )
        for name, text in docs
    ]


async def sync_bundled(
    kb: KnowledgeBase,
    progress: Progress | None = None,
    overall: Callable[[int, int], None] | None = None,
) -> IngestReport | None:
    """Ingest the bundled documents when they differ from what the collection last took in.
    Returns ``None`` when nothing changed. ``overall`` hears (chunks in place, chunks in all)."""
    docs = await asyncio.to_thread(bundled_documents)
    digest = bundled_hash(docs)
    if await kb.get_marker(BUNDLED_MARKER) == digest:
        return None
    report = IngestReport()
    sources = await asyncio.to_thread(bundled_source_documents, docs)
    total = sum(len(doc.chunks) for doc in sources)
    finished = 0
    for doc in sources:

        def each(source: str, done: int, of: int, before: int = finished) -> None:
            if progress:
                progress(source, done, of)
            if overall:
                overall(before + done, total)

        await kb.ingest_source(doc, report, each)
        finished += len(doc.chunks)
    await kb.prune(BUNDLED_ROOT, [name for name, _ in docs], report)
    # Written last: an interrupted ingestion is simply redone on the next start.
    await kb.set_marker(BUNDLED_MARKER, digest)
    log.info(
        "bundled knowledge base ingested: %d chunks added, %d unchanged, %d removed",
        report.added,
        report.unchanged,
        report.removed,
    )
    return report
