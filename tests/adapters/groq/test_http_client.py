"""The groq SDK's HTTP client as Esoteric builds it: the same requests, and no reference cycle
left behind by each (httpx binds a response's stream to the response)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import httpx
import pytest
from groq import AsyncGroq, DefaultAioHttpClient

from core.agent.groq_http import GroqHttpClient
from tests.support import groq_server as g

MODEL = "llama-3.3-70b-versatile"


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _responses_only_the_collector_frees() -> int:
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sum(isinstance(o, httpx.Response) for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def _ask(client: AsyncGroq, server: g.GroqStandIn) -> list[str]:
    """Two whole replies and two streamed ones, as the agent asks for them."""
    server.script(g.text("One."), g.text("Two."), g.text("Three, streamed."), g.text("Four."))
    said = []
    for _ in range(2):
        whole = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        said.append(whole.choices[0].message.content or "")
    for _ in range(2):
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        said.append("".join(parts))
    return said


async def test_each_request_is_freed_when_done(
    groq_server: g.GroqStandIn, no_automatic_collection: None
) -> None:
    client = AsyncGroq(
        api_key="gsk_test", base_url=groq_server.base_url, http_client=GroqHttpClient()
    )
    try:
        said = await _ask(client, groq_server)
        assert said == ["One.", "Two.", "Three, streamed.", "Four."]
        assert _responses_only_the_collector_frees() == 0
    finally:
        await client.close()


async def test_the_sdks_own_client_leaves_them_to_the_collector(
    groq_server: g.GroqStandIn, no_automatic_collection: None
) -> None:
    """Why Esoteric has its own: the same requests through the SDK's client leave one cycle
    per request."""
    client = AsyncGroq(
        api_key="gsk_test", base_url=groq_server.base_url, http_client=DefaultAioHttpClient()
    )
    try:
        await _ask(client, groq_server)
        assert _responses_only_the_collector_frees() >= 4
    finally:
        await client.close()
