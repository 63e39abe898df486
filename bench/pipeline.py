"""Drive N conversations x M messages through ConversationService with the scripted agent.

Two phases on one database: throughput with N conversations talking at once (each sends its
next message when the previous reply arrives), then latency at a light load (one conversation,
one message at a time), each turn timed from handle() to the reply delivered. With N clients
in a closed loop a turn's latency is mostly queueing (about N / throughput), so the latency
figure is taken where it describes the pipeline itself. Prints peak RSS too.
Target on the embedded SQLite default, one process: >= 300 turns/s, p99 < 20 ms.

    python bench/pipeline.py --conversations 50 --messages 20
    python bench/pipeline.py --database-url postgresql+asyncpg://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService, ServiceConfig
from core.messages import Inbound, Reply, Target
from core.store.database import create_database
from core.store.schema import upgrade_to_head

SCRIPT = [
    "hi",
    "I need a home loan",
    "25 lakh",
    "20 years",
    "my salary is 1.2 lakh a month",
    "no",
    "what about 30 lakh",
    "15 years",
    "yes",
    "no",
]


class CountingPort:
    def __init__(self) -> None:
        self.sent = 0

    async def send(self, target: Target, reply: Reply) -> None:
        self.sent += 1

    async def typing(self, target: Target) -> None:
        return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def conversation(
    service: ConversationService, index: int, messages: int, latencies: list[float]
) -> None:
    for n in range(messages):
        text = SCRIPT[n % len(SCRIPT)]
        inbound = Inbound(
            channel="bench",
            chat_key=f"chat-{index}",
            sender_id=f"user-{index}",
            text=text,
            event_id=f"{index}-{n}",
        )
        started = time.perf_counter()
        await service.handle(inbound)
        latencies.append(time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--light-messages", type=int, default=300)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        db = create_database(url)
        await upgrade_to_head(db)
        # As the runtime does: SQLite's log is checkpointed beside the turns, not on them.
        checkpoints = asyncio.create_task(db.keep_checkpointing())
        scripted = ScriptedAgent(load_catalogue())
        # The bench's senders are machines: flood control still counts every message, but
        # never stops one (a person's 20 a minute would silence the one-at-a-time run).
        service = ConversationService(
            db, scripted, scripted, ServiceConfig(flood_per_minute=1_000_000)
        )
        port = CountingPort()
        service.register_channel("bench", port)
        # Warm up connections and caches so the figures describe steady state.
        await conversation(service, -1, 3, [])

        loaded: list[float] = []
        cpu_started = time.process_time()
        started = time.perf_counter()
        await asyncio.gather(
            *(conversation(service, i, args.messages, loaded) for i in range(args.conversations))
        )
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        light: list[float] = []
        await conversation(service, args.conversations, args.light_messages, light)
        await service.aclose()
        checkpoints.cancel()
        await db.dispose()

    turns = len(loaded)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    backend = url.split(":", 1)[0]
    print(f"backend            {backend}")
    print(f"conversations      {args.conversations} x {args.messages} messages = {turns} turns")
    print(f"throughput         {turns / elapsed:.0f} turns/s")
    print(
        f"  latency p50/p99  {statistics.median(loaded) * 1000:.1f} / "
        f"{percentile(loaded, 0.99) * 1000:.1f} ms (queueing included)"
    )
    print(f"  CPU per turn     {cpu / turns * 1000:.2f} ms (all threads)")
    print(f"light load         {len(light)} turns, one at a time")
    print(f"latency p50        {statistics.median(light) * 1000:.2f} ms")
    print(f"latency p99        {percentile(light, 0.99) * 1000:.2f} ms")
    print(f"peak RSS           {rss_mib:.0f} MiB")
    print(f"replies delivered  {port.sent - 3}")


if __name__ == "__main__":
    asyncio.run(main())
