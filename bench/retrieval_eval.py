"""Retrieval quality on the evaluation set: recall@1, recall@3 and MRR over the bundled knowledge
base, per language (English, Hindi in Devanagari, Hinglish) and overall; how many questions clear
the relevance floor (the bot answers only those) and how many off-topic ones stay below it.

    .venv/bin/python bench/retrieval_eval.py [--k 10] [--show-misses]

The model comes from ESOTERIC_EMBEDDING_MODEL_DIR, else ../shared/models/all-MiniLM-L6-v2 beside
the repository. Target: recall@3 >= 0.9 in each language.
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
LANGUAGES = ("en", "hi", "hinglish")
# (language, question) with no answer in the documents: their best score should stay below the
# floor, so the bot says it does not know rather than quoting a loan document.
OFF_TOPIC = (
    ("en", "what is the capital of france"),
    ("en", "recipe for chicken biryani"),
    ("en", "who won the cricket world cup"),
    ("en", "write me a poem about the sea"),
    ("en", "how do I reset my wifi router"),
    ("hinglish", "kal mausam kaisa rahega"),
    ("hinglish", "biryani kaise banate hain"),
    ("hinglish", "koi accha sa gaana sunao"),
    ("hinglish", "cricket world cup kisne jeeta"),
    ("hi", "कल मौसम कैसा रहेगा"),
    ("hi", "बिरयानी कैसे बनाते हैं"),
    ("hi", "भारत की राजधानी क्या है"),
    ("hi", "क्रिकेट वर्ल्ड कप किसने जीता"),
    ("hi", "मुझे एक कविता सुनाओ"),
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
        best: list[float] = []
        expand = QueryExpander.for_catalogue(load_catalogue()).expand
        for item in questions:
            query = item["q"] if args.raw else expand(item["q"])
            hits = await kb.search(query, args.k, floor=0.0)
            best.append(hits[0].score if hits else 0.0)
            wanted = {tuple(a) for a in item["answers"]}
            rank = next((i for i, h in enumerate(hits, 1) if (h.source, h.heading) in wanted), None)
            ranks.append(rank)
            if args.show_misses and (rank != 1 or best[-1] < args.floor):
                top = f"{hits[0].source} > {hits[0].heading} ({hits[0].score:.2f})" if hits else "-"
                print(f"rank {rank}: {item['q']!r} -> top {top}")
        off = [
            (lang, await kb.search(q if args.raw else expand(q), 1, floor=0.0))
            for lang, q in OFF_TOPIC
        ]
        await kb.close()

    mrr_k = f"MRR@{args.k}"
    print(f"{'':10}{'n':>4}{'recall@1':>10}{'recall@3':>10}{mrr_k:>8}{'answered':>10}")
    langs = [item.get("lang", "en") for item in questions]
    for lang in (*LANGUAGES, "overall"):
        picked = [i for i, q in enumerate(langs) if lang in (q, "overall")]
        n = len(picked)
        if not n:
            continue
        mine = [ranks[i] for i in picked]
        r1 = sum(1 for r in mine if r == 1) / n
        r3 = sum(1 for r in mine if r is not None and r <= 3) / n
        mrr = sum(1 / r for r in mine if r is not None) / n
        # Answered: the best hit clears the floor and is one of the answers, so the bot would
        # quote the right section.
        answered = sum(1 for i in picked if best[i] >= args.floor and ranks[i] == 1)
        print(f"{lang:10}{n:>4}{r1:>10.3f}{r3:>10.3f}{mrr:>8.3f}{answered:>6}/{n:<3}")
    print("(target: recall@3 >= 0.9 in each language)")
    print(f"relevance floor {args.floor}:")
    for lang in LANGUAGES:
        scores = [best[i] for i, q in enumerate(langs) if q == lang]
        offs = [hits[0].score if hits else 0.0 for q, hits in off if q == lang]
        if scores:
            below = sum(1 for s in scores if s < args.floor)
            print(
                f"  {lang:9} questions: {below}/{len(scores)} below the floor "
                f"(lowest best score {min(scores):.2f})"
            )
        if offs:
            rejected = sum(1 for s in offs if s < args.floor)
            print(
                f"  {lang:9} off-topic: {rejected}/{len(offs)} below the floor "
                f"(best scores: {', '.join(f'{s:.2f}' for s in offs)})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
