"""The LLM agent's own cost, against the stand-in Groq server with a fixed time to first token.

Prints, per turn (median and p95):
- agent overhead: the turn's time minus the model's own time (request received by the stand-in
  to its last frame written), for a plain reply and for a turn with one EMI tool round. Target
  under 10 ms. Measured on the agent alone, and on the whole turn through ConversationService
  on SQLite (which adds the turn's database writes).
- first token to channel: from the first content frame leaving the stand-in to the first delta
  reaching a streaming channel through ConversationService. Target under 50 ms.
- first visible text at Groq's pace: the same, with the stand-in sending a word every
  ``--groq-word-ms`` (5 ms: about 270 tokens a second, a 70B model on Groq). Streamed text is held
  back until its sentence is whole and checked, so this includes the model writing the first
  sentence, printed alongside as the floor. Target under 400 ms.

    python bench/agent.py --turns 30 --ttft-ms 200 --token-ms 2 --groq-word-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bot.runtime import build_llm_agent  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from core.agent.base import AgentResult, TurnContext  # noqa: E402
from core.agent.llm import LLMAgent  # noqa: E402
from core.agent.scripted import ScriptedAgent  # noqa: E402
from core.catalogue import load_catalogue  # noqa: E402
from core.conversation import ConversationService  # noqa: E402
from core.messages import Inbound, Reply, Target  # noqa: E402
from core.ports import ReplyStream  # noqa: E402
from core.store.database import create_database  # noqa: E402
from core.store.schema import upgrade_to_head  # noqa: E402
from tests.support.groq_server import Recorded, bench_model  # noqa: E402
from tests.support.keyword_knowledge import KeywordKnowledge  # noqa: E402

QUESTION = "Which documents do I need for a home loan?"
EMI_QUESTION = "What is the EMI on 25 lakh?"


class Channel:
    def __init__(self) -> None:
        self.first_delta: list[float] = []

    async def send(self, target: Target, reply: Reply) -> None:
        return None

    async def typing(self, target: Target) -> None:
        return None

    async def stream(self, target: Target, reply: ReplyStream) -> None:
        first = True
        async for _ in reply:
            if first:
                self.first_delta.append(time.perf_counter())
                first = False
        await reply.final()


def _stats(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms   (n={len(ms)})"


class StandIn:
    """The stand-in Groq server in its own process, so its CPU is not counted as the agent's.
    perf_counter() is the system's monotonic clock, comparable across processes on Linux."""

    def __init__(self, ttft: float, token_delay: float) -> None:
        self.args = (str(ttft), str(token_delay))
        self.proc: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self.http = httpx.AsyncClient()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.groq_server", *self.args,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.base_url = (await self.proc.stdout.readline()).decode().strip()

    async def timings(self) -> dict[str, list[float]]:
        response = await self.http.get(f"{self.base_url}/_standin/timings")
        return dict(response.json())

    async def stop(self) -> None:
        await self.http.aclose()
        if self.proc is not None:
            self.proc.terminate()
            await self.proc.wait()


def _model_time(timings: dict[str, list[float]], first: int) -> float:
    spans = zip(timings["requests"][first:], timings["finished"][first:], strict=True)
    return sum(done - at for at, done in spans)


async def _agent_alone(
    agent: LLMAgent, server: StandIn, turns: int, text: str
) -> tuple[list[float], list[float]]:
    overheads, cpu, before, after = [], [], [], []
    for i in range(turns):
        first = len((await server.timings())["requests"])
        ctx = TurnContext(i, "bench", text, {})
        started, cpu_started = time.perf_counter(), time.process_time()
        result = None
        async for item in agent.stream(ctx):
            if isinstance(item, AgentResult):
                result = item
        ended = time.perf_counter()
        cpu.append(time.process_time() - cpu_started)
        assert result is not None, "the agent's stream ended without a result"
        assert not result.meta["fallback"], result.meta
        timings = await server.timings()
        overheads.append(ended - started - _model_time(timings, first))
        before.append(timings["requests"][first] - started)
        after.append(ended - timings["finished"][-1])
    if text == QUESTION:
        print(f"  before the request reaches the model {_stats(before)}")
        print(f"  after the model's last frame         {_stats(after)}")
    return overheads, cpu


async def _through_service(
    agent: LLMAgent, server: StandIn, turns: int, text: str
) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        db = create_database(f"sqlite+aiosqlite:///{tmp}/bench.db")
        await upgrade_to_head(db)
        channel = Channel()
        service = ConversationService(db, agent, agent.fallback)
        service.register_channel("bench", channel)
        overheads, to_channel = [], []
        try:
            for i in range(turns):
                first = len((await server.timings())["requests"])
                shown = len(channel.first_delta)
                inbound = Inbound("bench", f"chat-{i % 5}", f"user-{i % 5}", text, event_id=f"e{i}")
                started = time.perf_counter()
                await service.handle(inbound)
                total = time.perf_counter() - started
                timings = await server.timings()
                overheads.append(total - _model_time(timings, first))
                if len(channel.first_delta) > shown:
                    to_channel.append(channel.first_delta[-1] - timings["first_token_sent"][-1])
                # (A one-sentence reply shows no delta: it arrives whole, checked, at the end.)
        finally:
            await service.aclose()
            await db.dispose()
    return overheads, to_channel


@asynccontextmanager
async def _agent_against(
    ttft_ms: float, frame_ms: float
) -> AsyncIterator[tuple[LLMAgent, StandIn]]:
    """The agent as the runtime builds it, against a stand-in in its own process."""
    server = StandIn(ttft_ms / 1000, frame_ms / 1000)
    await server.start()
    try:
        async with AsyncExitStack() as stack:
            settings = load_settings(GROQ_API_KEY="gsk_bench", GROQ_BASE_URL=server.base_url)
            catalogue = load_catalogue()
            agent = build_llm_agent(
                settings, stack, catalogue, ScriptedAgent(catalogue), KeywordKnowledge()
            )
            yield agent, server
    finally:
        await server.stop()


async def _first_visible(turns: int, ttft_ms: float, word_ms: float) -> list[float]:
    """First token to first visible text through the service, at a realistic token pace."""
    async with _agent_against(ttft_ms, word_ms) as (agent, server):
        await _agent_alone(agent, server, 2, EMI_QUESTION)  # warm up the connection
        _, to_channel = await _through_service(agent, server, turns, QUESTION)
    return to_channel


async def main(turns: int, ttft_ms: float, token_ms: float, word_ms: float) -> None:
    async with _agent_against(ttft_ms, token_ms) as (agent, server):
        await _agent_alone(agent, server, 3, QUESTION)  # warm up the connection
        plain, plain_cpu = await _agent_alone(agent, server, turns, QUESTION)
        tooled, tooled_cpu = await _agent_alone(agent, server, turns, EMI_QUESTION)
        service_overhead, to_channel = await _through_service(agent, server, turns, QUESTION)
        service_tooled, _ = await _through_service(agent, server, turns, EMI_QUESTION)
    visible = await _first_visible(turns, ttft_ms, word_ms)
    # The stand-in sends the first sentence a word a frame: the model's own time to write it.
    first_sentence = bench_model(0, 0)(_question_request()).content.split(". ")[0]
    floor = (len(first_sentence.split()) - 1) * word_ms
    print(
        f"stand-in (own process): time to first token {ttft_ms:.0f} ms, "
        f"{token_ms:.0f} ms between frames; {turns} turns each"
    )
    print(f"agent overhead, plain reply          {_stats(plain)}   target < 10 ms")
    print(f"  agent CPU per turn (all of it)     {_stats(plain_cpu)}")
    print(f"agent overhead, one EMI tool round   {_stats(tooled)}   target < 10 ms")
    print(f"  agent CPU per turn (all of it)     {_stats(tooled_cpu)}")
    print(f"whole turn overhead (service+SQLite) {_stats(service_overhead)}")
    print(f"  the same, one EMI tool round       {_stats(service_tooled)}")
    print(f"first token -> channel               {_stats(to_channel)}   target < 50 ms")
    print(
        f"first visible text, a word every {word_ms:g} ms (sentence hold-back) "
        f"{_stats(visible)}   target < 400 ms"
    )
    print(f"  floor: the model writing the first sentence ({floor:.0f} ms)")


def _question_request() -> Recorded:
    return Recorded({}, {"messages": [{"role": "user", "content": QUESTION}]}, 0.0)


def _args(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--ttft-ms", type=float, default=200.0)
    parser.add_argument("--token-ms", type=float, default=2.0, help="time between frames")
    parser.add_argument(
        "--groq-word-ms", type=float, default=5.0, help="time between frames at Groq's pace"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _args()
    asyncio.run(main(args.turns, args.ttft_ms, args.token_ms, args.groq_word_ms))
