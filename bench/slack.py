"""The Slack channel's own cost, against the stand-in Slack Web API on loopback.

Prints:
- ack latency: signed Events API deliveries posted to the real ASGI app (over a real uvicorn
  socket) until Slack gets its 200, median and p95. Slack's budget is 3 s.
- turns/s: DMs from many reps answered end to end (bolt dispatch, the core on SQLite, the
  scripted sales persona, chat.postMessage on the stand-in).
- CPU per turn, from the process's CPU time over the run.

    python bench/slack.py --events 300 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from adapters.slack import SlackChannel  # noqa: E402
from bot.asgi import create_app  # noqa: E402
from bot.channels import build_channels  # noqa: E402
from bot.runtime import open_runtime  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from tests.support.slack_server import SlackStandIn, sample  # noqa: E402

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
QUESTIONS = ["home loan rate?", "car loan foreclosure?", "emi 500000 10.5 60", "personal loan fee"]


def signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={digest}"}  # fmt: skip


def dm(i: int) -> bytes:
    body = sample("event_message_im.json")
    body["event_id"] = f"EvBENCH{i:06d}"
    body["event"].update(
        channel=f"D{i % 64:08d}", user=f"U{i % 64:08d}", text=QUESTIONS[i % len(QUESTIONS)],
        ts=f"{1767225600 + i}.000100", client_msg_id=f"bench-{i}",
    )  # fmt: skip
    return json.dumps(body).encode()


async def main(events: int, concurrency: int) -> None:
    slack_api = SlackStandIn()
    await slack_api.start()
    for i in range(64):
        slack_api.add_user(f"U{i:08d}", f"Rep {i}")
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(
            data_dir=Path(data), slack_bot_token="xoxb-bench", slack_signing_secret=SECRET,
            slack_api_url=slack_api.api_url, log_level="WARNING",
        )  # fmt: skip
        async with open_runtime(settings, scheduler=False) as runtime:
            [channel] = build_channels(runtime)
            assert isinstance(channel, SlackChannel)
            await channel.start()
            server = uvicorn.Server(
                uvicorn.Config(create_app(runtime, [channel]), host="127.0.0.1", port=0,
                               log_level="error", lifespan="off")
            )  # fmt: skip
            serving = asyncio.create_task(server.serve())
            while not server.started:  # noqa: ASYNC110 (uvicorn exposes only a flag)
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            acks: list[float] = []
            gate = asyncio.Semaphore(concurrency)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

                async def deliver(i: int) -> None:
                    body = dm(i)
                    async with gate:
                        started = time.perf_counter()
                        response = await http.post("/slack/events", content=body,
                                                   headers=signed(body))  # fmt: skip
                        acks.append(time.perf_counter() - started)
                        response.raise_for_status()

                cpu0, wall0 = time.process_time(), time.perf_counter()
                await asyncio.gather(*(deliver(i) for i in range(events)))
                await channel.idle()
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            posts = len(slack_api.posts())
            await channel.stop()
            server.should_exit = True
            await serving
    await slack_api.stop()
    acks.sort()
    print(f"events {events}, concurrency {concurrency}, replies posted {posts}")
    print(
        f"ack latency: median {statistics.median(acks) * 1000:.1f} ms, "
        f"p95 {acks[int(len(acks) * 0.95) - 1] * 1000:.1f} ms"
    )
    print(f"end to end: {events / wall:.0f} turns/s; {cpu / events * 1000:.1f} ms CPU per turn "
          "(bench process: app, core, SQLite and the stand-in together)")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.concurrency))
