"""POST /api/v1/chat under concurrent clients: requests/s and latency percentiles.

Runs ``esoteric serve`` (scripted agent, embedded SQLite, no knowledge base) in a subprocess and
drives it with httpx: each client has its own session and walks the loan conversation over and
over, one message at a time, as a website visitor would.

    .venv/bin/python bench/http_api.py [--clients 50] [--seconds 10]

Target on two cores: at least 200 requests/s with p99 under 250 ms at 50 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import KEY, free_port, serve_env  # noqa: E402

CONVERSATION = ("hi", "I need a home loan", "25 lakh", "20 years", "1.2 lakh a month", "/reset")


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (Linux), to see what the load costs in memory."""
    try:
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float:
    """The process's CPU time so far, user and system (Linux): on shared cores, the server's
    CPU per request is steadier than its throughput, which the clients' CPU also bounds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def serve(data_dir: Path, memory: list[float | None]) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    env = serve_env(
        data_dir,
        port,
        ESOTERIC_API_KEYS=KEY,
        ESOTERIC_RATE_LIMIT_PER_MINUTE="1000000",
        # Benchmark senders are machines: flood control counts them, never stops one (10,000
        # a minute is the most the setting allows).
        ESOTERIC_FLOOD_MESSAGES_PER_MINUTE="10000",
        ESOTERIC_EMBEDDING_MODEL_DIR=str(data_dir / "no-model"),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(60):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{base}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield base, process.pid
    finally:
        memory.append(peak_rss_mib(process.pid))
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def visitor(base: str, deadline: float, latencies: list[float], errors: list[int]) -> None:
    """One website visitor: its own connection (as a browser has), its own session."""
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as client:
        created = await client.post("/api/v1/sessions")
        session = created.json()["session_id"]
        turn = 0
        while time.perf_counter() < deadline:
            message = CONVERSATION[turn % len(CONVERSATION)]
            started = time.perf_counter()
            response = await client.post(
                "/api/v1/chat",
                json={"session_id": session, "message": message, "client_message_id": f"m{turn}"},
            )
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(response.status_code)
            turn += 1


async def main(clients: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        memory: list[float | None] = []
        async with serve(Path(tmp), memory) as (base, pid):
            # Warm up: imports, the first SQLite pages, connections.
            warmup = time.perf_counter() + 1.0
            await asyncio.gather(*(visitor(base, warmup, [], []) for _ in range(clients)))
            latencies: list[float] = []
            errors: list[int] = []
            cpu_before = cpu_seconds(pid)
            started = time.perf_counter()
            deadline = started + seconds
            await asyncio.gather(
                *(visitor(base, deadline, latencies, errors) for _ in range(clients))
            )
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(pid) - cpu_before
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"POST /api/v1/chat, scripted agent, SQLite, {clients} concurrent clients")
    print(f"requests: {len(latencies)} in {elapsed:.1f} s, errors: {len(errors)}")
    print(f"throughput: {len(latencies) / elapsed:.0f} requests/s")
    print(f"latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"server CPU: {cpu / len(latencies) * 1000:.2f} ms per request")
    if memory and memory[0] is not None:
        print(f"server peak RSS: {memory[0]:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.seconds))
