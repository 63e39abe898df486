"""The Telegram channel's whole path, measured against python-telegram-bot floors.

Default (``--mode realistic``, ``bench/telegram_realistic.py``): customers' traffic in a stated
mix (product questions answered from the bundled knowledge base, slot answers, greetings,
commands; ``bench/telegram_traffic.py``) through ``esoteric serve`` with retrieval on (the real
model, embedded Chroma ingested before timing), with the scripted agent and with the LLM agent
against an instant Groq stand-in, Telegram's send pace on and off; beside the bare PTB echo bot
and the echo bot making one groq-SDK call per update, in the same run. Prints each system's CPU
per update, peak RSS, p50/p99, updates/s and the CPU ratios to the floors, then a burst of
2,000 updates over 200 chats on the LLM path with the pace on (replies/s against the budget).

    python bench/telegram.py                          # about five minutes
    python bench/telegram.py --rounds 2 --burst-updates 0
    python bench/telegram.py --mode burst

``--mode script`` is the earlier comparison: a scripted loan conversation the scripted agent
answers without retrieval, in-process bots, throughput against the echo bot:

Both bots long-poll the same stand-in Bot API, which runs in its own process (so its CPU is not
charged to the bot). The load is closed-loop in waves: every chat sends one message, and the
next wave goes once every chat has its reply. Esoteric's path is the real one: stand-in ->
python-telegram-bot -> TelegramChannel -> ConversationService with the scripted agent -> SQLite
-> sendMessage on the stand-in. Each chat cycles through a loan conversation (greeting, product,
amount, tenure, income and quote, /reset). The echo bot replies with the text it got.

Prints updates/s and p50/p99 latency (update queued at the stand-in -> reply received) for both,
and the ratio of throughputs. Each bot runs twice: on asyncio's loop with the default garbage
collector, as a bare PTB bot runs, and on uvloop with the garbage collector settled after
startup, as ``esoteric serve`` runs. The target compares each as it ships; the like-for-like
ratios are printed beside it. Telegram's 30 messages/s pace is off for this run: it would cap
both bots far below what they can do, and the point is the bot's own overhead.

    python bench/telegram.py --mode script --chats 8 --waves 90 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on the path and its name would shadow the
# python-telegram-bot package: the project root takes its place.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.telegram_standin import ECHO_TOKEN, run_stand_in  # noqa: E402
from tests.support.telegram_server import TOKEN, message_update  # noqa: E402

SCRIPT = [
    "hi",
    "I need a home loan",
    "25 lakh",
    "20 years",
    "my salary is 1.2 lakh a month",
    "/reset",
]


# -- the two bots ------------------------------------------------------------------------------


# Messages a minute a benchmark chat may send before flood control would answer "slow down".
MACHINE_PACE = 1_000_000


async def _calls(http: aiohttp.ClientSession, base: str, token: str) -> dict[str, int]:
    async with http.get(f"{base}/_control/calls/{token}") as response:
        return dict(await response.json())


async def drive(
    base: str, token: str, chats: int, waves: int, warmup: int, first_update: int
) -> dict[str, Any]:
    """Run the waves against one bot; figures from the measured waves only."""
    latencies: list[float] = []
    elapsed = cpu = 0.0
    update_id = first_update
    async with aiohttp.ClientSession() as http:
        before = await _calls(http, base, token)
        for wave in range(warmup + waves):
            updates = []
            for chat in range(chats):
                text = SCRIPT[wave % len(SCRIPT)]
                updates.append(message_update(update_id, 500_000 + chat, text))
                update_id += 1
            if wave == warmup:
                cpu = time.process_time()
            async with http.post(
                f"{base}/_control/wave", data=json.dumps({"token": token, "updates": updates})
            ) as response:
                result = await response.json()
            if "error" in result:
                raise RuntimeError(result["error"])
            if wave >= warmup:
                latencies += result["latencies"]
                elapsed += result["done"]
        cpu = time.process_time() - cpu
        after = await _calls(http, base, token)
    latencies.sort()
    updates = (warmup + waves) * chats
    per_update = {m: (n - before.get(m, 0)) / updates for m, n in after.items()}
    return {
        "calls": per_update,
        "updates_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "updates": len(latencies),
        "cpu_ms": cpu / len(latencies) * 1000,
    }


async def echo_bot(
    api_url: str, chats: int, waves: int, warmup: int, base: str, runtime: str, first_update: int
) -> dict[str, Any]:
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None and message.text:
            await message.reply_text(message.text)

    app = ApplicationBuilder().token(ECHO_TOKEN).base_url(api_url).build()
    app.add_handler(MessageHandler(filters.TEXT, echo))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(timeout=10)
    settle(runtime)
    try:
        return await drive(base, ECHO_TOKEN, chats, waves, warmup, first_update)
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


async def esoteric_bot(
    api_url: str,
    chats: int,
    waves: int,
    warmup: int,
    base: str,
    workers: int,
    runtime: str,
    first_update: int,
) -> dict[str, Any]:
    from adapters.telegram import TelegramChannel, TelegramConfig
    from core.agent.scripted import ScriptedAgent
    from core.catalogue import load_catalogue
    from core.conversation import ConversationService, ServiceConfig
    from core.store.database import create_database
    from core.store.schema import upgrade_to_head

    with tempfile.TemporaryDirectory() as data:
        db = create_database(f"sqlite+aiosqlite:///{Path(data) / 'esoteric.db'}")
        await upgrade_to_head(db)
        scripted = ScriptedAgent(load_catalogue())
        # ``workers``: turns in flight at once (ESOTERIC_WORKER_CONCURRENCY).
        # The bench's chats are machines sending a message a few milliseconds apart: flood
        # control counts them all but never stops one (a person's 20 a minute would).
        config = ServiceConfig(concurrency=workers, flood_per_minute=MACHINE_PACE)
        service = ConversationService(db, scripted, scripted, config)
        channel = TelegramChannel(
            service, TelegramConfig(token=TOKEN, api_url=api_url, messages_per_second=None)
        )
        service.register_channel(channel.name, channel)
        await channel.start()
        settle(runtime)
        try:
            figures = await drive(base, TOKEN, chats, waves, warmup, first_update)
        finally:
            await channel.stop()
            await service.aclose()
            await db.dispose()
    return figures


async def core_alone(chats: int, waves: int, warmup: int, runtime: str) -> dict[str, Any]:
    """The same waves straight into ConversationService with a port that sends nothing: the
    share of the cost that is the core's (SQLite and the scripted agent), not Telegram's."""
    from core.agent.scripted import ScriptedAgent
    from core.catalogue import load_catalogue
    from core.conversation import ConversationService, ServiceConfig
    from core.messages import Inbound, Reply, Target, parse_command
    from core.store.database import create_database
    from core.store.schema import upgrade_to_head

    class Silent:
        async def send(self, target: Target, reply: Reply) -> None:
            return None

        async def typing(self, target: Target) -> None:
            return None

    async def timed(inbound: Inbound) -> float:
        started = time.perf_counter()
        await service.handle(inbound)
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as data:
        db = create_database(f"sqlite+aiosqlite:///{Path(data) / 'esoteric.db'}")
        await upgrade_to_head(db)
        scripted = ScriptedAgent(load_catalogue())
        config = ServiceConfig(flood_per_minute=MACHINE_PACE)
        service = ConversationService(db, scripted, scripted, config)
        service.register_channel("telegram", Silent())
        settle(runtime)
        latencies: list[float] = []
        elapsed = cpu = 0.0
        for wave in range(warmup + waves):
            if wave == warmup:
                cpu = time.process_time()
            text = SCRIPT[wave % len(SCRIPT)]
            inbounds = [
                Inbound(
                    "telegram", str(c), str(c), text, f"{wave}:{c}", command=parse_command(text)
                )
                for c in range(chats)
            ]
            started = time.perf_counter()
            results = await asyncio.gather(*(timed(i) for i in inbounds))
            if wave >= warmup:
                elapsed += time.perf_counter() - started
                latencies += results
        cpu = time.process_time() - cpu
        await service.aclose()
        await db.dispose()
    latencies.sort()
    return {
        "updates_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu_ms": cpu / len(latencies) * 1000,
        "calls": {},
    }


def settle(runtime: str) -> None:
    """After startup, the process tuning ``esoteric serve`` applies (see bot/server.py)."""
    if runtime == "esoteric":
        from bot.server import settle_garbage_collector

        settle_garbage_collector()


def _child(kind: str, runtime: str, port: int, args: Any, first_update: int, out: Any) -> None:
    """One bot in one runtime, in a fresh process, so no run inherits another's loop or GC."""
    from bot.cli import loop_factory

    base = f"http://127.0.0.1:{port}"
    api_url = f"{base}/bot"
    runs: dict[str, Any] = {
        "echo": lambda: echo_bot(
            api_url, args.chats, args.waves, args.warmup, base, runtime, first_update
        ),
        "esoteric": lambda: esoteric_bot(
            api_url,
            args.chats,
            args.waves,
            args.warmup,
            base,
            args.workers,
            runtime,
            first_update,
        ),
        "core": lambda: core_alone(args.chats, args.waves, args.warmup, runtime),
    }
    factory = loop_factory() if runtime == "esoteric" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        out.send(runner.run(runs[kind]()))


def run(kind: str, runtime: str, port: int, args: Any, index: int) -> dict[str, Any]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_child, args=(kind, runtime, port, args, index * 10_000_000 + 1, child)
    )
    process.start()
    figures: dict[str, Any] = parent.recv()
    process.join()
    return figures


def line(name: str, figures: dict[str, Any]) -> str:
    calls = ", ".join(f"{m} {n:.2f}" for m, n in sorted(figures["calls"].items()) if n >= 0.005)
    return (
        f"{name:<44} {figures['updates_per_s']:>9.1f} {figures['p50_ms']:>7.1f} "
        f"{figures['p99_ms']:>7.1f} {figures['cpu_ms']:>7.2f}   {calls}"
    )


PLAN = [
    ("echo", "asyncio", "bare PTB echo bot, asyncio"),
    ("esoteric", "esoteric", "Esoteric, uvloop + settled GC (as shipped)"),
    ("echo", "esoteric", "bare PTB echo bot, uvloop + settled GC"),
    ("esoteric", "asyncio", "Esoteric, asyncio"),
    ("core", "esoteric", "core alone (no Telegram), as shipped"),
]


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, so its latency and CPU figures belong with it."""
    return sorted(runs, key=lambda r: float(r["updates_per_s"]))[len(runs) // 2]


def bench(port: int, args: argparse.Namespace) -> None:
    # Rounds interleave the bots, so a slow spell on the machine hits all of them alike.
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(k, r): [] for k, r, _ in PLAN}
    for round_ in range(args.rounds):
        for index, (kind, runtime, _) in enumerate(PLAN):
            runs[(kind, runtime)].append(run(kind, runtime, port, args, round_ * len(PLAN) + index))
    results = {key: _median_run(values) for key, values in runs.items()}
    print(
        f"Telegram: {args.chats} chats x {args.waves} waves ({args.chats * args.waves} updates "
        f"measured per run), {args.workers} Esoteric workers; {args.rounds} interleaved rounds, "
        "the median run of each shown; every run in a fresh process, the stand-in in its own"
    )
    print(f"{'':<44} {'updates/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7}   API calls/update")
    for kind, runtime, name in PLAN:
        spread = sorted(f"{r['updates_per_s']:.0f}" for r in runs[(kind, runtime)])
        print(line(name, results[(kind, runtime)]) + f"   (runs: {', '.join(spread)})")
    print("(CPU ms: the bot process's CPU per update, all threads)")

    def ratio(ours: str, theirs: str) -> float:
        return float(
            results[("esoteric", ours)]["updates_per_s"]
            / results[("echo", theirs)]["updates_per_s"]
        )

    shipped = ratio("esoteric", "asyncio")
    verdict = "meets" if shipped >= 0.6 else "below"
    print(
        f"ratio Esoteric as shipped / bare PTB echo bot: {shipped:.0%} ({verdict} the 60% target)"
    )
    print(
        f"like for like: on asyncio {ratio('asyncio', 'asyncio'):.0%}, "
        f"on uvloop + settled GC {ratio('esoteric', 'esoteric'):.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("realistic", "burst", "script"), default="realistic")
    parser.add_argument("--chats", type=int, help="chats per wave (default 8)")
    parser.add_argument("--waves", type=int, help="measured waves (realistic 60, script 90)")
    parser.add_argument("--warmup", type=int, help="warm-up waves (realistic 10, script 12)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--workers", type=int, default=8, help="script mode: turns in flight")
    realistic = parser.add_argument_group("realistic and burst modes")
    realistic.add_argument(
        "--paced-waves", type=int, default=20, help="measured waves with the 30 msg/s pace"
    )
    realistic.add_argument(
        "--repeat-share", type=float, default=0.25,
        help="share of product questions repeating one asked before (query-vector cache hits)",
    )  # fmt: skip
    realistic.add_argument("--seed", type=int, default=14)
    realistic.add_argument(
        "--systems", default="echo,echo-llm,scripted,llm,scripted-paced,llm-paced",
        help="comma list of: echo, echo-llm, scripted, llm, scripted-paced, llm-paced",
    )  # fmt: skip
    realistic.add_argument("--burst-updates", type=int, default=2000, help="0: no burst")
    realistic.add_argument("--burst-chats", type=int, default=200)
    realistic.add_argument(
        "--py-spy", type=Path, metavar="DIR",
        help="record each Esoteric run's measured waves with py-spy into DIR and print where "
        "its CPU went, by component",
    )  # fmt: skip
    realistic.add_argument("--top", type=int, default=0, help="with --py-spy: top frames")
    realistic.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a further setting for every Esoteric run, e.g. ESOTERIC_WORKER_CONCURRENCY=64",
    )  # fmt: skip
    args = parser.parse_args()
    script = args.mode == "script"
    args.chats = args.chats or 8
    args.waves = args.waves or (90 if script else 60)
    args.warmup = args.warmup if args.warmup is not None else (12 if script else 10)
    args.rounds = args.rounds or 3
    if not script:
        from bench.telegram_realistic import bench as realistic_bench

        args.systems = [] if args.mode == "burst" else args.systems.split(",")
        asyncio.run(realistic_bench(args))
        return
    # The stand-in is forked before this process starts an event loop.
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=run_stand_in, args=(child,), daemon=True
    )
    process.start()
    try:
        port = parent.recv()
        bench(port, args)
    finally:
        process.terminate()
        process.join()


if __name__ == "__main__":
    main()
