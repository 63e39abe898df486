"""The WebSocket API on a real uvicorn server, through a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.adapters.http.conftest import KEY, OTHER_KEY, Api, running_api, served
from tests.support import groq_server as groq
from tests.support.groq_server import GroqStandIn


async def frame(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        return dict(json.loads(await ws.recv()))


async def until_reply(ws: ClientConnection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Frames up to and including the next whole reply."""
    seen: list[dict[str, Any]] = []
    while True:
        got = await frame(ws)
        if got["type"] == "reply":
            return seen, got
        seen.append(got)


async def open_socket(
    base: str, session: str, key: str | None = KEY, first_frame_key: str | None = None
) -> ClientConnection:
    headers = {"X-API-Key": key} if key else {}
    ws = await connect(f"ws://{base}/api/v1/ws/{session}", additional_headers=headers)
    if first_frame_key is not None:
        await ws.send(json.dumps({"api_key": first_frame_key}))
    return ws


@pytest.fixture
async def live(api: Api) -> AsyncIterator[tuple[Api, str]]:
    async with served(api.app) as base:
        yield api, base


async def test_a_message_gets_its_reply_with_choices(live: tuple[Api, str]) -> None:
    api, base = live
    session = await api.new_session()
    async with await open_socket(base, session) as ws:
        assert await frame(ws) == {"type": "ready", "session_id": session}
        await ws.send(json.dumps({"message": "hi", "client_message_id": "1"}))
        before, reply = await until_reply(ws)
    assert {"type": "typing"} in before
    assert reply["reply"].startswith("Hello! I'm Esoteric")
    assert reply["choices"][0] == {"label": "Home Loan", "value": "I need a home loan"}


async def test_browsers_send_the_key_as_their_first_frame(live: tuple[Api, str]) -> None:
    api, base = live
    session = await api.new_session()
    async with await open_socket(base, session, key=None, first_frame_key=KEY) as ws:
        assert (await frame(ws))["type"] == "ready"
        await ws.send(json.dumps({"message": "I need a car loan"}))
        _, reply = await until_reply(ws)
    assert "Car Loan" in reply["reply"]


@pytest.mark.parametrize(
    ("key", "first_frame"), [("wrong", None), (None, "wrong"), (None, "not json")]
)
async def test_a_socket_without_a_valid_key_is_closed_4401(
    live: tuple[Api, str], key: str | None, first_frame: str | None
) -> None:
    api, base = live
    session = await api.new_session()
    ws = await connect(
        f"ws://{base}/api/v1/ws/{session}", additional_headers={"X-API-Key": key} if key else {}
    )
    if first_frame is not None:
        await ws.send(first_frame if first_frame == "not json" else json.dumps({"api_key": "x"}))
    assert (await frame(ws))["code"] == "unauthorized"
    with pytest.raises(ConnectionClosed) as closed:
        await frame(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_another_keys_session_is_closed_4404(live: tuple[Api, str]) -> None:
    api, base = live
    session = await api.new_session(KEY)
    ws = await open_socket(base, session, key=OTHER_KEY)
    assert (await frame(ws))["code"] == "not_found"
    with pytest.raises(ConnectionClosed) as closed:
        await frame(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


async def test_a_reconnect_continues_the_same_session(live: tuple[Api, str]) -> None:
    api, base = live
    session = await api.new_session()
    async with await open_socket(base, session) as ws:
        await frame(ws)
        await ws.send(json.dumps({"message": "I need a home loan"}))
        _, asked = await until_reply(ws)
    assert "How much" in asked["reply"]
    async with await open_socket(base, session) as ws:
        await frame(ws)
        await ws.send(json.dumps({"message": "25 lakh"}))
        _, next_question = await until_reply(ws)
    assert "how long" in next_question["reply"]


async def test_bad_frames_get_error_frames_and_the_socket_stays_open(
    live: tuple[Api, str],
) -> None:
    api, base = live
    session = await api.new_session()
    async with await open_socket(base, session) as ws:
        await frame(ws)
        await ws.send("not json")
        assert (await frame(ws))["code"] == "invalid"
        await ws.send(json.dumps({"text": "hi"}))
        error = await frame(ws)
        assert error["code"] == "invalid" and "message" in error["detail"]
        await ws.send(json.dumps({"message": "x" * 70_000}))
        assert (await frame(ws))["code"] == "too_large"
        await ws.send(json.dumps({"message": "hi"}))
        _, reply = await until_reply(ws)
    assert reply["reply"].startswith("Hello!")


async def test_a_resent_message_is_answered_once(live: tuple[Api, str], tmp_path: Path) -> None:
    api, base = live
    session = await api.new_session()
    async with await open_socket(base, session) as ws:
        await frame(ws)
        await ws.send(json.dumps({"message": "I need a car loan", "client_message_id": "7"}))
        _, first = await until_reply(ws)
        await ws.send(json.dumps({"message": "I need a car loan", "client_message_id": "7"}))
        _, again = await until_reply(ws)
    assert again["duplicate"] is True and again["client_message_id"] == "7"
    assert again["reply"] == first["reply"]
    assert api.runtime.service.counters.turns == 1


async def test_rest_replies_reach_the_sessions_open_sockets(live: tuple[Api, str]) -> None:
    api, base = live
    session = await api.new_session()
    async with await open_socket(base, session) as ws:
        await frame(ws)
        response = await api.client.post(
            "/api/v1/chat", headers=api.headers(), json={"session_id": session, "message": "hi"}
        )
        _, pushed = await until_reply(ws)
    assert pushed["reply"] == response.json()["reply"]


async def test_socket_messages_share_the_keys_rate_limit(tmp_path: Path) -> None:
    async with running_api(tmp_path, rate_limit_per_minute=3) as api, served(api.app) as base:
        session = await api.new_session()  # 1
        async with await open_socket(base, session) as ws:
            await frame(ws)
            await ws.send(json.dumps({"message": "hi"}))  # 2
            await until_reply(ws)
            await ws.send(json.dumps({"message": "I need a home loan"}))  # 3
            await until_reply(ws)
            await ws.send(json.dumps({"message": "25 lakh"}))  # 4: over
            limited = await frame(ws)
    assert limited["code"] == "rate_limited" and limited["retry_after"] >= 1


# -- streaming with the LLM agent ----------------------------------------------------------------


async def ask_over_socket(
    tmp_path: Path, standin: GroqStandIn, words: str
) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """One message over a WebSocket to the bot with the LLM agent (the Groq stand-in): the
    frames before the reply, the reply, and /metrics afterwards."""
    async with (
        running_api(
            tmp_path,
            GROQ_API_KEY="gsk_" + "t" * 32,
            GROQ_BASE_URL=standin.base_url,
            llm_retry_backoff_seconds=0.01,
        ) as api,
        served(api.app) as base,
    ):
        session = await api.new_session()
        async with await open_socket(base, session) as ws:
            await frame(ws)
            await ws.send(json.dumps({"message": words}))
            before, reply = await until_reply(ws)
        return before, reply, (await api.client.get("/metrics")).text


async def test_llm_replies_stream_as_deltas_then_the_whole_reply(
    tmp_path: Path, groq_server: GroqStandIn
) -> None:
    answer = (
        "We offer home, personal, car, business and education loans. "
        "Each has its own rate and tenure. Which one suits you?"
    )
    # A word every 40 ms: the socket gets a frame at most every 0.1 s.
    groq_server.script(groq.text(answer, prompt_tokens=150, completion_tokens=18, token_delay=0.04))
    before, reply, metrics = await ask_over_socket(tmp_path, groq_server, "what loans do you have?")
    deltas = [f["text"] for f in before if f["type"] == "delta"]
    # Each sentence once whole and checked (the last one comes with the whole reply).
    assert "".join(deltas) == (
        "We offer home, personal, car, business and education loans. "
        "Each has its own rate and tenure."
    )
    assert len(deltas) == 2
    assert reply["reply"] == answer
    assert 'esoteric_llm_tokens_total{kind="prompt"} 150.0' in metrics
    assert 'esoteric_llm_tokens_total{kind="completion"} 18.0' in metrics
