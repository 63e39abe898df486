"""Retrieval speed: ingestion chunks/s and query latency p50/p99 on a 1,000-chunk collection.

    .venv/bin/python bench/retrieval.py [--chunks 1000] [--queries 300] [--chroma-url URL]

Chunks are built from the bundled documents' sentences (seeded shuffle), so their length and
vocabulary are the knowledge base's own. A query is what a chat turn pays: embedding the
question (each worded afresh, as customers do) plus the search; a question asked again word
for word reuses its vector and pays the search alone. CPU figures are the process's (all
threads: onnxruntime's and Chroma's own too). Targets: query p50 < 20 ms; ingestion >= 30
chunks/s on two cores. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.knowledge.base import IngestReport, KnowledgeBase, SourceDocument, connect_chroma  # noqa: E402
from core.knowledge.chunking import chunk_id  # noqa: E402
from core.knowledge.documents import markdown_sections  # noqa: E402
from core.knowledge.embedding import load_embedder  # noqa: E402
from core.knowledge.ingest import bundled_documents  # noqa: E402
from core.knowledge.types import Chunk  # noqa: E402


def model_dir() -> Path:
    configured = os.environ.get("ESOTERIC_EMBEDDING_MODEL_DIR")
    default = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
    return Path(configured) if configured else default


def synthetic_chunks(count: int, seed: int = 7) -> list[Chunk]:
    rng = random.Random(seed)
    sentences: list[tuple[str, str]] = []
    for _name, text in bundled_documents():
        for section in markdown_sections(text):
            for sentence in re.split(r"(?<=[.!?])\s+|\n+", section.text):
                if len(sentence) > 30:
                    sentences.append((section.heading, sentence.strip()))
    chunks = []
    for i in range(count):
        heading = rng.choice(sentences)[0] + f" (part {i})"
        body: list[str] = []
        while sum(len(s) + 1 for s in body) < rng.randint(300, 750):
            body.append(rng.choice(sentences)[1])
        text = " ".join(body)
        source = f"synthetic-{i % 50:02d}.md"
        chunks.append(
            Chunk(chunk_id("bench", source, heading, text), "bench", source, heading, text, i)
        )
    return chunks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed_searches(kb: KnowledgeBase, queries: list[str]) -> tuple[list[float], float]:
    """Each query searched in turn: its latency (ms), and the CPU (ms, all threads) per query."""
    latencies = []
    cpu = time.process_time()
    for q in queries:
        t = time.perf_counter()
        await kb.search(q, 4, floor=0.0)
        latencies.append((time.perf_counter() - t) * 1000)
    return latencies, (time.process_time() - cpu) / len(queries) * 1000


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--chroma-url", default=None)
    args = parser.parse_args()

    embedder = await asyncio.to_thread(load_embedder, model_dir())
    # The English questions only, so the figures compare with earlier runs of this bench.
    questions = [
        q["q"]
        for q in json.loads((ROOT / "bench/data/retrieval_eval.json").read_text())["questions"]
        if q.get("lang", "en") == "en"
    ]
    chunks = synthetic_chunks(args.chunks)
    by_source: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_source.setdefault(c.source, []).append(c)

    with tempfile.TemporaryDirectory() as tmp:
        client = await asyncio.to_thread(
            connect_chroma, None if args.chroma_url else Path(tmp), args.chroma_url
        )
        kb = KnowledgeBase(client, embedder, collection=f"bench-{os.getpid()}")
        await kb.open()
        report = IngestReport()
        started = time.perf_counter()
        cpu_started = time.process_time()
        for source, items in by_source.items():
            await kb.ingest_source(SourceDocument("bench", source, tuple(items)), report)
        ingest_seconds = time.perf_counter() - started
        ingest_cpu = time.process_time() - cpu_started
        count = await kb.count()

        started = time.perf_counter()
        await kb.ingest_source(
            SourceDocument("bench", "synthetic-00.md", tuple(by_source["synthetic-00.md"])),
            IngestReport(),
        )
        reingest_seconds = time.perf_counter() - started

        for q in questions[:5]:  # warm up
            await kb.search(q, 4)
        # Worded afresh the first time, so the embedding is paid as for a new question; the
        # same wordings again are questions asked before (their vectors remembered).
        wordings = [f"{questions[i % len(questions)]} ({i})" for i in range(args.queries)]
        latencies, query_cpu = await timed_searches(kb, wordings)
        again, again_cpu = await timed_searches(kb, wordings)
        at_once: dict[int, float] = {}
        for n in (1, 4, 8, 16):
            cpu = time.process_time()
            asked = 0
            for start in range(0, args.queries, n):
                # n new questions arriving together, as turns of n chats do.
                batch = [f"{questions[i % len(questions)]} (at once {n}/{i})"
                         for i in range(start, start + n)]  # fmt: skip
                await asyncio.gather(*(kb.search(q, 4, floor=0.0) for q in batch))
                asked += len(batch)
            at_once[n] = (time.process_time() - cpu) / asked * 1000
        embed_only = []
        for q in questions:
            t = time.perf_counter()
            await asyncio.to_thread(embedder.embed, [q])
            embed_only.append((time.perf_counter() - t) * 1000)
        await asyncio.to_thread(client.delete_collection, kb.name)
        await kb.close()

    print(f"cores: {os.cpu_count()}; chroma: {args.chroma_url or 'embedded'}")
    print(
        f"ingestion: {report.added} chunks in {ingest_seconds:.1f}s = "
        f"{report.added / ingest_seconds:.1f} chunks/s (target >= 30); collection holds {count}"
    )
    print(
        f"ingestion CPU: {ingest_cpu:.1f} CPU-seconds = {report.added / ingest_cpu:.1f} chunks per "
        f"CPU-second (about {2 * report.added / ingest_cpu:.0f} chunks/s if two cores were idle); "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    print(f"re-ingesting an unchanged file: {reingest_seconds * 1000:.1f} ms (nothing re-embedded)")
    print(
        f"query (embed + search, {args.queries} queries, {count} chunks): "
        f"p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms "
        f"(target p50 < 20 ms); embedding alone p50 {percentile(embed_only, 0.5):.1f} ms"
    )
    print(
        f"query CPU (all threads): {query_cpu:.2f} ms per new question; asked again word for "
        f"word (vector reused): {again_cpu:.2f} ms, p50 {percentile(again, 0.5):.2f} ms, "
        f"p99 {percentile(again, 0.99):.2f} ms"
    )
    print(
        "query CPU (all threads) with new questions arriving together: "
        + ", ".join(f"{n} at once {ms:.2f} ms" for n, ms in at_once.items())
        + " per question"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
