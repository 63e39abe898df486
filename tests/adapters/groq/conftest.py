"""Fixtures for the LLM agent: the Groq stand-in, the agent built by the composition root's own
builder from settings, and a channel that renders streamed replies as a platform would."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.runtime import build_llm_agent
from bot.settings import load_settings
from core.agent.llm import LLMAgent
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService, ServiceConfig
from core.messages import Inbound, Reply, Target, parse_command
from core.ports import ReplyStream
from core.store.database import Database
from tests.support.groq_server import GroqStandIn
from tests.support.keyword_knowledge import KeywordKnowledge

API_KEY = "gsk_FakeKeyForLocalTestsOnly"
_events = itertools.count(1)

# Short waits so failure tests stay fast; set through settings, as an operator would.
FAST = {
    "llm_retry_backoff_seconds": 0.01,
    "llm_request_timeout_seconds": 1.0,
    "llm_turn_deadline_seconds": 3.0,
}


@dataclass
class StreamingChannel:
    """A streaming outbound port: keeps each reply's deltas and the final text it settled on."""

    deltas: list[list[str]] = field(default_factory=list)
    finals: list[Reply] = field(default_factory=list)
    sent: list[Reply] = field(default_factory=list)
    first_delta_at: list[float] = field(default_factory=list)

    async def send(self, target: Target, reply: Reply) -> None:
        self.sent.append(reply)

    async def typing(self, target: Target) -> None:
        return None

    async def stream(self, target: Target, reply: ReplyStream) -> None:
        shown: list[str] = []
        self.deltas.append(shown)
        async for delta in reply:
            if not shown:
                self.first_delta_at.append(time.perf_counter())
            shown.append(delta)
        self.finals.append(await reply.final())

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.finals] + [r.text for r in self.sent]


@pytest.fixture
def knowledge() -> KeywordKnowledge:
    return KeywordKnowledge()


AgentFactory = Callable[..., "asyncio.Future[LLMAgent]"]


@pytest.fixture
async def make_agent(
    groq_server: GroqStandIn, knowledge: KeywordKnowledge
) -> AsyncIterator[Callable[..., Any]]:
    """Builds the agent exactly as ``open_runtime`` does, from settings overrides."""
    async with AsyncExitStack() as stack:

        def build(api_key: str = API_KEY, **overrides: Any) -> LLMAgent:
            settings = load_settings(
                GROQ_API_KEY=api_key, GROQ_BASE_URL=groq_server.base_url, **{**FAST, **overrides}
            )
            catalogue = load_catalogue()
            return build_llm_agent(
                settings, stack, catalogue, ScriptedAgent(catalogue), knowledge=knowledge
            )

        yield build


def service(db: Database, agent: LLMAgent, channel: Any) -> ConversationService:
    svc = ConversationService(db, agent, agent.fallback, ServiceConfig())
    svc.register_channel("test", channel)
    return svc


def say(text: str, chat: str = "chat-1", phone: str | None = None) -> Inbound:
    return Inbound(
        channel="test",
        chat_key=chat,
        sender_id=f"user-{chat}",
        sender_name="Asha",
        text=text,
        event_id=f"evt-{next(_events)}",
        command=parse_command(text),
        contact_phone=phone,
    )
