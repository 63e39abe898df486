"""Retrieval quality on the evaluation set: recall@1, recall@3 and MRR over the bundled knowledge
base, plus how many off-topic questions stay below the relevance floor.

    .venv/bin/python bench/retrieval_eval.py [--k 10] [--show-misses]

The model comes from ESOTERIC_EMBEDDING_MODEL_DIR, else ../shared/models/all-MiniLM-L6-v2 beside
the repository. Target: recall@3 >= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.catalogue import load_catalogue  # noqa: E402
from core.knowledge.base import DEFAULT_FLOOR, KnowledgeBase, connect_chroma  # noqa: E402
from core.knowledge.embedding import load_embedder  # noqa: E402
from core.knowledge.ingest import (  # noqa: E402
    bundled_documents,
    bundled_source_documents,
    sync_bundled,
)
from core.knowledge.query import QueryExpander  # noqa: E402

EVAL = ROOT / "bench" / "data" / "retrieval_eval.json"
OFF_TOPIC = (
    "what is the capital of france",
    "recipe for chicken biryani",
    "who won the cricket world cup",
    "kal mausam kaisa rahega",
    "write me a poem about the sea",
    "how do I reset my wifi router",
)


def model_dir() -> Path:
    configured = os.environ.get("ESOTERIC_EMBEDDING_MODEL_DIR")
    default = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
    return Path(configured) if configured else default


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--show-misses", action="store_true")
    parser.add_argument("--floor", type=float, default=DEFAULT_FLOOR)
    parser.add_argument("--raw", action="store_true", help="no query expansion")
    args = parser.parse_args()

    data = json.loads(EVAL.read_text("utf-8"))
    questions = data["questions"]
    known = {
        (doc.source, chunk.heading)
        for doc in bundled_source_documents(bundled_documents())
        for chunk in doc.chunks
    }
    for item in questions:
        for source, heading in item["answers"]:
            if (source, heading) not in known:
                print(f"eval set names a missing section: {source} > {heading}", file=sys.stderr)
                return 2

    embedder = await asyncio.to_thread(load_embedder, model_dir())
    with tempfile.TemporaryDirectory() as tmp:
        client = await asyncio.to_thread(connect_chroma, Path(tmp))
        kb = KnowledgeBase(client, embedder, floor=args.floor)
        await sync_bundled(kb)
        ranks: list[int | None] = []
        on_scores: list[float] = []
        expand = QueryExpander.for_catalogue(load_catalogue()).expand
        for item in questions:
            query = item["q"] if args.raw else expand(item["q"])
            hits = await kb.search(query, args.k, floor=0.0)
            on_scores.append(hits[0].score if hits else 0.0)
            wanted = {tuple(a) for a in item["answers"]}
            rank = next((i for i, h in enumerate(hits, 1) if (h.source, h.heading) in wanted), None)
            ranks.append(rank)
            if args.show_misses and rank != 1:
                top = f"{hits[0].source} > {hits[0].heading} ({hits[0].score:.2f})" if hits else "-"
                print(f"rank {rank}: {item['q']!r} -> top {top}")
        off = [await kb.search(q if args.raw else expand(q), 1, floor=0.0) for q in OFF_TOPIC]
        await kb.close()

    n = len(questions)
    r1 = sum(1 for r in ranks if r == 1) / n
    r3 = sum(1 for r in ranks if r is not None and r <= 3) / n
    mrr = sum(1 / r for r in ranks if r is not None) / n
    rejected = sum(1 for hits in off if not hits or hits[0].score < args.floor)
    print(f"questions: {n}")
    print(f"recall@1: {r1:.3f}")
    print(f"recall@3: {r3:.3f}  (target >= 0.9)")
    print(f"MRR@{args.k}: {mrr:.3f}")
    print(
        f"relevance floor {args.floor}: {rejected}/{len(OFF_TOPIC)} off-topic questions below it "
        f"(their best scores: {', '.join(f'{h[0].score:.2f}' for h in off if h)}); "
        f"lowest best score among eval questions: {min(on_scores):.2f}, "
        f"{sum(1 for s in on_scores if s < args.floor)} of them below the floor"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
