"""Esoteric's Telegram path on realistic traffic, beside two floors measured in the same run.

Every system is its own process, started fresh for each run, long-polling the stand-in Bot API
(another process); the driver is this process. A system's CPU is its own process's (all its
threads, read from /proc), its memory the process's peak resident set (VmHWM). The systems:

- the bare python-telegram-bot echo bot, and the echo bot making one groq-SDK call per update
  (``bench/telegram_floors.py``);
- ``esoteric serve`` as shipped (uvloop, settled GC, INFO logs, SQLite, the embedded Chroma store
  ingested with the bundled knowledge base before timing, the real MiniLM model), once with the
  scripted agent (no GROQ_API_KEY) and once with the LLM agent streaming its replies from the
  Groq stand-in; each with Telegram's send pace on (ESOTERIC_TELEGRAM_MESSAGES_PER_SECOND=30,
  the default) and off (1000 a second, the setting's largest).

The Groq stand-in (``tests/support/groq_server.py``, its benchmark model, in its own process)
answers at once: 0 ms to the first token, a word per SSE frame when streamed.

The load is closed-loop in waves (every chat sends one message; the next wave goes once every
chat has its reply). Latency: the update queued at the stand-in -> the first message of its reply
received there (a streamed reply's final edit follows; its lag is printed).

The burst: 2,000 updates over 200 chats queued at once, the LLM path with the pace on:
replies a second against the configured budget.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.telegram_profile import PySpy
from bench.telegram_profile import report as profile_report
from bench.telegram_standin import ECHO_TOKEN
from bench.telegram_traffic import Traffic
from tests.support.telegram_server import TOKEN, message_update

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(
    os.environ.get("ESOTERIC_EMBEDDING_MODEL_DIR")
    or ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PACED = 30.0  # Telegram's budget, the setting's default
UNPACED = 1000.0  # the setting's largest value: far above what the bot can send
# A benchmark chat is a machine sending a message every few milliseconds: flood control counts
# its messages but must not stop it (the setting's largest value).
FLOOD_OFF = 10_000
# Further settings for every Esoteric run (--set KEY=VALUE), for experiments.
EXTRA_ENV: dict[str, str] = {}


@dataclass(frozen=True)
class System:
    key: str
    name: str
    kind: str  # echo, echo-llm, esoteric
    agent: str | None = None  # scripted, llm
    pace: float | None = None

    @property
    def token(self) -> str:
        return TOKEN if self.kind == "esoteric" else ECHO_TOKEN


SYSTEMS = (
    System("echo", "bare PTB echo bot", "echo"),
    System("echo-llm", "echo + one groq-SDK call", "echo-llm"),
    System("scripted", "Esoteric, scripted agent, pace off", "esoteric", "scripted", UNPACED),
    System("llm", "Esoteric, LLM agent (streaming), pace off", "esoteric", "llm", UNPACED),
    System("scripted-paced", "Esoteric, scripted agent, 30 msg/s", "esoteric", "scripted", PACED),
    System("llm-paced", "Esoteric, LLM agent (streaming), 30 msg/s", "esoteric", "llm", PACED),
)


# -- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process, every thread of it (including finished ones)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _clean_env() -> dict[str, str]:
    """This process's environment without any setting of Esoteric's or its platforms'."""
    prefixes = ("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_", "DATABASE_URL")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@dataclass
class Bot:
    """One system's process."""

    process: asyncio.subprocess.Process
    workdir: Path
    log: Path
    started: float
    ready_after: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    async def stop(self) -> None:
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


async def start_floor(system: System, api_url: str, groq_url: str) -> Bot:
    workdir = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    log = workdir / "bot.log"
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "telegram_floors.py"),
            system.kind, ECHO_TOKEN, api_url, groq_url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
            env=_clean_env(),
        )  # fmt: skip
    bot = Bot(process, workdir, log, time.perf_counter())
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"{system.name} did not start:\n{bot.tail()}")
    bot.ready_after = time.perf_counter() - bot.started
    return bot


async def start_esoteric(system: System, api_url: str, groq_url: str, data_dir: Path) -> Bot:
    """``esoteric serve`` with the Telegram channel on, configured through its settings."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-esoteric-"))
    port = _free_port()
    env = _clean_env()
    env.update(
        PYTHONPATH=str(ROOT),
        TELEGRAM_BOT_TOKEN=TOKEN,
        ESOTERIC_TELEGRAM_API_URL=api_url,
        ESOTERIC_DATA_DIR=str(data_dir),
        DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'esoteric.db'}",
        ESOTERIC_EMBEDDING_MODEL_DIR=str(MODEL_DIR),
        ESOTERIC_HTTP_PORT=str(port),
        ESOTERIC_FLOOD_MESSAGES_PER_MINUTE=str(FLOOD_OFF),
        ESOTERIC_TELEGRAM_MESSAGES_PER_SECOND=f"{system.pace:g}",
    )
    if system.agent == "llm":
        env.update(GROQ_API_KEY="gsk_bench_esoteric_key", GROQ_BASE_URL=groq_url)
    env.update(EXTRA_ENV)
    log = workdir / "serve.log"
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve",
            cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    bot = Bot(process, workdir, log, time.perf_counter())
    deadline = time.perf_counter() + 120
    while b"esoteric is running" not in log.read_bytes():
        if process.returncode is not None or time.perf_counter() > deadline:
            await bot.stop()
            raise RuntimeError(f"{system.name} did not start:\n{bot.tail()}")
        await asyncio.sleep(0.02)
    bot.ready_after = time.perf_counter() - bot.started
    # The knowledge base may still be opening in the background: nothing is timed before
    # searches use it (/ready reports it).
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/ready") as response:
                    checks = (await response.json()).get("checks", {})
                if checks.get("knowledge", {}).get("ok"):
                    break
            except aiohttp.ClientError:
                pass
            if process.returncode is not None or time.perf_counter() > deadline:
                await bot.stop()
                raise RuntimeError(f"{system.name}: no knowledge base:\n{bot.tail()}")
            await asyncio.sleep(0.05)
    return bot


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def ingest_once(data_dir: Path) -> str:
    """The bundled knowledge base into the embedded Chroma store under ``data_dir``, with the
    real model, before anything is timed (``esoteric serve`` then finds it up to date)."""
    env = _clean_env()
    env.update(
        PYTHONPATH=str(ROOT),
        ESOTERIC_DATA_DIR=str(data_dir),
        ESOTERIC_EMBEDDING_MODEL_DIR=str(MODEL_DIR),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "kb", "ingest", "--bundled",
        cwd=data_dir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"ingestion failed:\n{out.decode(errors='replace')}")
    return out.decode(errors="replace").strip().splitlines()[-1]


class GroqProcess:
    """The instant Groq stand-in in its own process."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.groq_server", "0", "0",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, env=_clean_env(),
        )  # fmt: skip
        assert self.process.stdout is not None
        self.base_url = (await self.process.stdout.readline()).decode().strip()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


# -- driving -----------------------------------------------------------------------------------


@dataclass
class Driver:
    http: aiohttp.ClientSession
    base: str
    next_update: int = 1

    def updates(self, texts: Sequence[str], first_chat: int) -> list[dict[str, Any]]:
        out = []
        for offset, text in enumerate(texts):
            out.append(message_update(self.next_update, first_chat + offset, text))
            self.next_update += 1
        return out

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.post(f"{self.base}{path}", data=json.dumps(body or {})) as response:
            result = await response.json()
        if isinstance(result, dict) and "error" in result:
            raise RuntimeError(result["error"])
        return result

    async def get(self, path: str) -> Any:
        async with self.http.get(f"{self.base}{path}") as response:
            return await response.json()


@dataclass
class RunFigures:
    cpu_ms: float
    rss_mib: float
    p50_ms: float
    p99_ms: float
    updates_per_s: float
    calls: dict[str, float]
    start_s: float
    edit_lag_ms: float | None
    updates: int


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def closed_loop(
    driver: Driver,
    bot: Bot,
    token: str,
    waves: list[list[str]],
    warmup: int,
    profile: Path | None = None,
) -> RunFigures:
    latencies: list[float] = []
    elapsed = cpu = 0.0
    before: dict[str, int] = {}
    spy = PySpy(bot.pid, profile) if profile is not None else None
    for index, texts in enumerate(waves):
        if index == warmup:
            if spy is not None:
                await spy.start()
            before = await driver.get(f"/_control/calls/{token}")
            await driver.get(f"/_control/lags/{token}")  # forget the warm-up's
            cpu = cpu_seconds(bot.pid)
        result = await driver.post(
            "/_control/wave", {"token": token, "updates": driver.updates(texts, 600_000)}
        )
        if index >= warmup:
            latencies += result["latencies"]
            elapsed += result["done"]
    cpu = cpu_seconds(bot.pid) - cpu
    if spy is not None:
        await spy.stop()
    after = await driver.get(f"/_control/calls/{token}")
    lags = (await driver.get(f"/_control/lags/{token}"))["lags"]
    n = len(latencies)
    return RunFigures(
        cpu_ms=cpu / n * 1000,
        rss_mib=peak_rss_mib(bot.pid),
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        updates_per_s=n / elapsed,
        calls={m: (c - before.get(m, 0)) / n for m, c in after.items() if m != "getUpdates"},
        start_s=bot.ready_after,
        edit_lag_ms=statistics.median(lags) * 1000 if lags else None,
        updates=n,
    )


async def run_system(
    system: System,
    driver: Driver,
    waves: list[list[str]],
    warmup: int,
    api_url: str,
    groq_url: str,
    data_dir: Path,
    profile: Path | None = None,
) -> RunFigures:
    await driver.post(f"/_control/reset/{system.token}")
    if system.kind == "esoteric":
        bot = await start_esoteric(system, api_url, groq_url, data_dir)
    else:
        bot = await start_floor(system, api_url, groq_url)
    try:
        return await closed_loop(driver, bot, system.token, waves, warmup, profile)
    except Exception as exc:
        raise RuntimeError(f"{system.name}: {exc}\n{bot.tail()}") from exc
    finally:
        await bot.stop()


@dataclass
class BurstFigures:
    chats: int
    updates: int
    replies: int
    seconds: float
    calls: dict[str, int]
    cpu_ms_per_reply: float
    rss_mib: float


async def burst(
    driver: Driver,
    api_url: str,
    groq_url: str,
    data_dir: Path,
    chats: int,
    per_chat: int,
    pace: float,
    seed: int,
) -> BurstFigures:
    system = System("burst", "burst", "esoteric", "llm", pace)
    await driver.post(f"/_control/reset/{system.token}")
    bot = await start_esoteric(system, api_url, groq_url, data_dir)
    try:
        traffic = Traffic(seed)
        # Warm up on other chats, closed loop, then let the budget drain.
        for texts in traffic.waves(8, 5):
            await driver.post(
                "/_control/wave", {"token": TOKEN, "updates": driver.updates(texts, 900_000)}
            )
        await asyncio.sleep(2)
        # Message k of every chat, then message k + 1 of every chat, ...
        updates = []
        for texts in traffic.waves(chats, per_chat):
            updates += driver.updates(texts, 700_000)
        cpu = cpu_seconds(bot.pid)
        result = await driver.post("/_control/burst", {"token": TOKEN, "updates": updates})
        cpu = cpu_seconds(bot.pid) - cpu
        sends = result["sends"]
        return BurstFigures(
            chats=chats,
            updates=len(updates),
            replies=len(sends),
            seconds=sends[-1],
            calls=result["calls"],
            cpu_ms_per_reply=cpu / len(sends) * 1000,
            rss_mib=peak_rss_mib(bot.pid),
        )
    except Exception as exc:
        raise RuntimeError(f"burst: {exc}\n{bot.tail()}") from exc
    finally:
        await bot.stop()


# -- the report --------------------------------------------------------------------------------


def _span(values: Sequence[float], digits: int = 1) -> str:
    low, high = min(values), max(values)
    if f"{low:.{digits}f}" == f"{high:.{digits}f}":
        return f"{low:.{digits}f}"
    return f"{low:.{digits}f}-{high:.{digits}f}"


@dataclass
class Report:
    runs: dict[str, list[RunFigures]] = field(default_factory=dict)

    def add(self, key: str, figures: RunFigures) -> None:
        self.runs.setdefault(key, []).append(figures)

    def table(self, systems: Sequence[System]) -> list[str]:
        lines = [
            f"{'':<44} {'CPU ms/upd':>11} {'peak MiB':>9} {'p50 ms':>11} {'p99 ms':>11} "
            f"{'updates/s':>11} {'start s':>8}   Bot API calls/update"
        ]
        for system in systems:
            runs = self.runs.get(system.key)
            if not runs:
                continue
            calls: dict[str, float] = {}
            for figures in runs:
                for method, n in figures.calls.items():
                    calls[method] = calls.get(method, 0.0) + n / len(runs)
            shown = ", ".join(f"{m} {n:.2f}" for m, n in sorted(calls.items()) if n >= 0.005)
            lags = [f.edit_lag_ms for f in runs if f.edit_lag_ms is not None]
            if lags:
                shown += f"; final edit {_span(lags)} ms after the first message"
            lines.append(
                f"{system.name:<44} {_span([f.cpu_ms for f in runs], 2):>11} "
                f"{_span([f.rss_mib for f in runs], 0):>9} {_span([f.p50_ms for f in runs]):>11} "
                f"{_span([f.p99_ms for f in runs]):>11} "
                f"{_span([f.updates_per_s for f in runs], 0):>11} "
                f"{_span([f.start_s for f in runs]):>8}   {shown}"
            )
        return lines

    def ratios(self, ours: str, floor: str) -> list[float]:
        pairs = zip(self.runs.get(ours, []), self.runs.get(floor, []), strict=False)
        return [a.cpu_ms / b.cpu_ms for a, b in pairs]


def _verdict(values: Sequence[float], target: float) -> str:
    if not values:
        return "not measured"
    if max(values) <= target:
        return "met"
    return "missed" if min(values) > target else "met in some rounds only"


async def bench(args: Any) -> None:
    from multiprocessing import get_context

    from bench.telegram_standin import run_stand_in

    systems = [s for s in SYSTEMS if s.key in args.systems]
    EXTRA_ENV.update(item.split("=", 1) for item in args.set)
    if EXTRA_ENV:
        print(f"Esoteric runs with: {EXTRA_ENV}")
    parent, child = get_context("fork").Pipe()
    stand_in = get_context("fork").Process(target=run_stand_in, args=(child,), daemon=True)
    stand_in.start()
    port = parent.recv()
    base = f"http://127.0.0.1:{port}"
    api_url = f"{base}/bot"
    groq = GroqProcess()
    await groq.start()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-telegram-kb-"))
    report = Report()
    profiles: list[tuple[Path, float]] = []
    timeout = aiohttp.ClientTimeout(total=900)
    try:
        ingested = await ingest_once(data_dir)
        print(f"knowledge base, ingested once before timing: {ingested}", flush=True)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            driver = Driver(http, base)
            mix = ""
            for round_ in range(args.rounds if systems else 0):
                # The same messages for every system of a round; each round its own.
                order = systems[round_ % len(systems) :] + systems[: round_ % len(systems)]
                for system in order:
                    waves = args.paced_waves if system.pace == PACED else args.waves
                    traffic = Traffic(args.seed + round_, args.repeat_share)
                    plan = traffic.waves(args.chats, args.warmup)
                    traffic.reset_counts()
                    plan += traffic.waves(args.chats, waves)
                    if system.key == "scripted":
                        mix = traffic.describe()
                    profile = None
                    if args.py_spy is not None and system.kind == "esoteric":
                        profile = args.py_spy / f"{system.key}-r{round_ + 1}.txt"
                    figures = await run_system(
                        system, driver, plan, args.warmup, api_url, groq.base_url, data_dir,
                        profile,
                    )  # fmt: skip
                    report.add(system.key, figures)
                    if profile is not None:
                        profiles.append((profile, figures.cpu_ms))
                    print(
                        f"  round {round_ + 1} {system.name:<44} {figures.cpu_ms:6.2f} ms CPU/upd "
                        f"{figures.updates_per_s:7.1f} upd/s  p50 {figures.p50_ms:6.1f} ms  "
                        f"peak {figures.rss_mib:4.0f} MiB",
                        flush=True,
                    )
            if systems:
                _print_report(args, systems, report, mix)
            if profiles:
                print("\nWhere the Esoteric process's CPU went (py-spy; this run's CPU figures are "
                      "inflated by the sampling):")  # fmt: skip
                for path, cpu_ms in profiles:
                    print("\n".join(profile_report(path, cpu_ms, args.top)))
            if args.burst_updates:
                chats = args.burst_chats
                result = await burst(
                    driver, api_url, groq.base_url, data_dir, chats,
                    args.burst_updates // chats, PACED, args.seed,
                )  # fmt: skip
                _print_burst(result, PACED)
    finally:
        await groq.stop()
        stand_in.terminate()
        stand_in.join()
        shutil.rmtree(data_dir, ignore_errors=True)


def _print_report(args: Any, systems: Sequence[System], report: Report, mix: str) -> None:
    print()
    print(
        f"Telegram, realistic traffic: {args.chats} chats in closed-loop waves, "
        f"{args.waves} measured waves ({args.paced_waves} with the 30 msg/s pace) after "
        f"{args.warmup} warm-up waves; {args.rounds} interleaved rounds, ranges over the rounds; "
        "each run a fresh process"
    )
    if mix:
        print(f"mix of a round's measured messages: {mix}")
    print("\n".join(report.table(systems)))
    print(
        "(CPU: the bot process's own, all threads, per update; peak: its VmHWM; start: process "
        "start to polling; latency: update queued -> first message of its reply)"
    )
    checks = (
        ("scripted", "echo", "scripted agent / bare echo", 3.0),
        ("scripted-paced", "echo", "scripted agent, 30 msg/s / bare echo", 3.0),
        ("llm", "echo-llm", "LLM agent / echo + LLM call", 1.5),
        ("llm-paced", "echo-llm", "LLM agent, 30 msg/s / echo + LLM call", 1.5),
    )
    print("CPU per update, Esoteric / its floor, round by round (same round's runs):")
    for ours, floor, label, target in checks:
        values = report.ratios(ours, floor)
        if values:
            rounds = ", ".join(f"{v:.1f}x" for v in values)
            print(f"  {label:<40} {rounds}   target <= {target:g}x: {_verdict(values, target)}")


def _print_burst(result: BurstFigures, pace: float) -> None:
    rate = result.replies / result.seconds
    calls = ", ".join(f"{m} {n}" for m, n in sorted(result.calls.items()))
    budget_calls = result.calls.get("sendMessage", 0) + result.calls.get("editMessageText", 0)
    print()
    print(
        f"Burst: {result.updates} updates over {result.chats} chats queued at once; LLM path "
        f"(streaming), pace {pace:g} msg/s"
    )
    print(
        f"  {result.replies} replies in {result.seconds:.1f} s: {rate:.1f} replies/s = "
        f"{rate / pace:.0%} of the configured budget (target >= 90%: "
        f"{'met' if rate / pace >= 0.9 else 'missed'})"
    )
    print(
        f"  budgeted calls per reply {budget_calls / max(1, result.replies):.2f}; calls: {calls}; "
        f"{result.updates / max(1, result.replies):.1f} updates per reply (a chat's waiting "
        f"messages are answered as one turn); bot CPU {result.cpu_ms_per_reply:.1f} ms per reply, "
        f"peak {result.rss_mib:.0f} MiB"
    )
