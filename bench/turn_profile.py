"""Where a realistic turn's time goes: customers' product questions answered by the scripted
agent from the knowledge base (the real model and embedded Chroma), through ConversationService
on SQLite. The main thread is profiled with cProfile; the knowledge search runs in a worker
thread, so its parts are timed around the calls themselves: wall time, and the process's CPU
time, which counts onnxruntime's and Chroma's own threads too (turns run one at a time, so little
else runs meanwhile).

    python bench/turn_profile.py --turns 200            # every question worded differently
    python bench/turn_profile.py --turns 200 --repeat   # the same eight questions again and again
    python bench/turn_profile.py --mix --chats 16       # bench/telegram.py's realistic mix, in
                                                        # waves of one message from every chat

Needs the embedding model: ``--model`` (default ``../shared/models/all-MiniLM-L6-v2``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chromadb.api.models.Collection import Collection  # noqa: E402

from bot.runtime import open_runtime  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from core.knowledge.base import KnowledgeBase  # noqa: E402
from core.knowledge.embedding import MiniLMEmbedder  # noqa: E402
from core.messages import Inbound, Reply, Target  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from telegram_traffic import Traffic  # noqa: E402

QUESTIONS = [
    "What documents do I need for a home loan?",
    "what is the interest rate on a car loan",
    "can I prepay my personal loan early?",
    "how long does business loan approval take",
    "what is the processing fee for an education loan?",
    "Is there a penalty for foreclosure?",
    "kitna byaj lagega home loan pe",
    "who can apply for a personal loan",
]
THREAD_TIMES: collections.Counter[str] = collections.Counter()
THREAD_CPU: collections.Counter[str] = collections.Counter()
CALLS: collections.Counter[str] = collections.Counter()


def _timed(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name, None)
    if original is None:  # a part this version does not have
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            THREAD_TIMES[label] += time.perf_counter() - started
            THREAD_CPU[label] += time.process_time() - cpu
            CALLS[label] += 1

    setattr(owner, name, timed)


class Silent:
    async def send(self, target: Target, reply: Reply) -> None:
        return None

    async def typing(self, target: Target) -> None:
        return None


def _cumulative(stats: pstats.Stats, where: str, function: str) -> float:
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return sum(v[3] for k, v in entries.items() if k[0].endswith(where) and k[2] == function)


async def main(turns: int, repeat: bool, model: Path, mix: bool, chats: int) -> None:
    _timed(MiniLMEmbedder, "_forward", "embedding (tokenizer + ONNX)")
    _timed(MiniLMEmbedder, "_forward_queries", "embedding queries together")
    _timed(Collection, "query", "Chroma query (HNSW + metadata)")
    _timed(Collection, "count", "Chroma count")
    _timed(KnowledgeBase, "_exact_search", "exact search (numpy)")
    _timed(KnowledgeBase, "_search_sync", "knowledge search in a thread")
    _timed(KnowledgeBase, "search", "knowledge searches")
    settings = load_settings(
        data_dir=Path(tempfile.mkdtemp()), embedding_model_dir=model, log_level="WARNING",
        flood_messages_per_minute=10_000,
    )  # fmt: skip
    async with open_runtime(settings, scheduler=False) as runtime:
        service = runtime.service
        service.register_channel("bench", Silent())
        for i in range(10):  # warm up
            text = f"{QUESTIONS[i % len(QUESTIONS)]} {i}"
            await service.handle(Inbound("bench", f"w{i}", f"w{i}", text, event_id=f"w{i}"))
        THREAD_TIMES.clear()
        THREAD_CPU.clear()
        CALLS.clear()
        profile = cProfile.Profile()
        started, cpu = time.perf_counter(), time.process_time()
        profile.enable()
        if mix:
            traffic = Traffic(seed=1, repeat_share=0.29)
            sent = 0
            while sent < turns:
                # One message from every chat at once, as bench/telegram.py's waves arrive.
                wave = [traffic.message() for _ in range(chats)]
                await asyncio.gather(
                    *(
                        service.handle(
                            Inbound("bench", f"m{c}", f"m{c}", text, event_id=f"m{sent + c}")
                        )
                        for c, text in enumerate(wave)
                    )
                )
                sent += len(wave)
            turns = sent
        else:
            for i in range(turns):
                question = QUESTIONS[i % len(QUESTIONS)]
                text = question if repeat else f"{question} (case {i})"
                chat = f"c{i % 50}"
                await service.handle(Inbound("bench", chat, chat, text, event_id=f"e{i}"))
        profile.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = pstats.Stats(profile)
    kind = "the same eight questions" if repeat else "every question worded differently"
    if mix:
        kind = f"the realistic mix, {chats} chats at once ({traffic.describe()})"
    print(f"{turns} turns, {kind}: {wall / turns * 1000:.2f} ms wall, "
          f"{cpu / turns * 1000:.2f} ms CPU per turn (all threads)")  # fmt: skip
    for label, seconds in THREAD_TIMES.items():
        if label == "knowledge searches":
            continue  # a coroutine: its wall time includes waiting
        print(
            f"  {label:38s} {seconds / turns * 1000:6.2f} ms/turn wall, "
            f"{THREAD_CPU[label] / turns * 1000:6.2f} ms CPU (all threads), "
            f"{CALLS[label] / turns:.2f} calls/turn"
        )
    print(f"  {'searches per turn':38s} {CALLS['knowledge searches'] / turns:6.2f}")
    parts = [
        ("query expansion", "core/knowledge/query.py", "expand"),
        ("scripted agent (rules, loan maths)", "core/agent/scripted.py", "respond"),
        ("SQL: every transaction of the turn", "core/store/database.py", "_core"),
    ]
    for label, where, function in parts:
        seconds = _cumulative(stats, where, function)
        print(f"  {label:38s} {seconds / turns * 1000:6.2f} ms/turn")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--repeat", action="store_true")
    parser.add_argument("--mix", action="store_true", help="bench/telegram.py's realistic mix")
    parser.add_argument("--chats", type=int, default=16, help="with --mix: chats at once")
    parser.add_argument(
        "--model", type=Path, default=ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
    )
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.repeat, args.model, args.mix, args.chats))
