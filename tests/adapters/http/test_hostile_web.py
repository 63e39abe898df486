"""The public web API against hostile visitors: limits per visitor on the shared web-chat key,
ended sessions that stay ended (in every process), frames built to crash the parser, and
unauthenticated endpoints that say and cost little."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from adapters.http.channel import WebConfig
from bot.asgi import public_detail
from tests.adapters.http.conftest import KEY, OTHER_KEY, Api, running_api, served
from tests.adapters.http.test_websocket import ask_over_socket, frame, open_socket, until_reply
from tests.support import groq_server as groq
from tests.support.groq_server import GroqStandIn


def visitor(api: Api, address: str) -> httpx.AsyncClient:
    """A client of the same app seen from another address."""
    transport = httpx.ASGITransport(app=api.app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://esoteric")


async def chat(client: httpx.AsyncClient, session: str, words: str, key: str = KEY) -> Any:
    return await client.post(
        "/api/v1/chat",
        json={"session_id": session, "message": words},
        headers={"X-API-Key": key},
    )


async def test_each_visitor_on_the_web_chat_key_has_limits_of_their_own(tmp_path: Path) -> None:
    limits = {"web_chat_key": KEY, "web_chat_session_per_minute": 3, "web_chat_ip_per_minute": 8}
    async with running_api(tmp_path, **limits) as api:
        async with visitor(api, "203.0.113.7") as greedy, visitor(api, "198.51.100.9") as other:
            session = (await greedy.post("/api/v1/sessions", headers=api.headers())).json()
            sid = session["session_id"]
            answers = [await chat(greedy, sid, "hi") for _ in range(4)]
            assert [r.status_code for r in answers] == [200, 200, 200, 429]
            refused = answers[-1]
            assert "chat session" in refused.json()["detail"]
            assert int(refused.headers["Retry-After"]) >= 1

            # The same address, another session: messages again, until the address's limit.
            second = (await greedy.post("/api/v1/sessions", headers=api.headers())).json()
            statuses = [(await chat(greedy, second["session_id"], "hi")).status_code]
            statuses += [
                (await greedy.get("/api/v1/sessions/" + sid, headers=api.headers())).status_code
                for _ in range(3)
            ]
            assert statuses[-1] == 429
            assert (
                "your address"
                in (await greedy.get("/api/v1/sessions/" + sid, headers=api.headers())).json()[
                    "detail"
                ]
            )

            # Another visitor on the same key is not held up by either.
            theirs = (await other.post("/api/v1/sessions", headers=api.headers())).json()
            assert (await chat(other, theirs["session_id"], "hi")).status_code == 200

        # A key of one integration keeps its one per-key limit, not the visitors' ones.
        session = await api.new_session(OTHER_KEY)
        codes = [(await chat(api.client, session, "hi", OTHER_KEY)).status_code for _ in range(5)]
        assert codes == [200] * 5


async def test_the_socket_of_a_deleted_session_is_closed_4410(api: Api) -> None:
    async with served(api.app) as base:
        session = await api.new_session()
        async with await open_socket(base, session) as ws:
            await frame(ws)
            await ws.send(json.dumps({"message": "hi"}))
            await until_reply(ws)
            deleted = await api.client.delete(f"/api/v1/sessions/{session}", headers=api.headers())
            assert deleted.status_code in (200, 204)
            ended = await frame(ws)
            assert ended["type"] == "error" and ended["code"] == "session_ended"
            with pytest.raises(ConnectionClosed) as closed:
                await frame(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4410


async def test_a_session_ended_by_another_process_takes_no_more_messages(tmp_path: Path) -> None:
    # Two processes' worth of app on one database; no Redis, so no frame crosses between them:
    # the database alone must hold the end.
    async with running_api(tmp_path) as first, running_api(tmp_path) as second:
        session = await first.new_session()
        async with served(second.app) as base, await open_socket(base, session) as ws:
            await frame(ws)
            await ws.send(json.dumps({"message": "hi"}))
            await until_reply(ws)  # the second process now knows the session
            deleted = await first.client.delete(
                f"/api/v1/sessions/{session}", headers=first.headers()
            )
            assert deleted.status_code in (200, 204)
            await ws.send(json.dumps({"message": "I need a home loan"}))
            got = await frame(ws)
            while got["type"] == "typing":
                got = await frame(ws)
            assert got["type"] == "error" and got["code"] == "session_ended"
            with pytest.raises(ConnectionClosed) as closed:
                await frame(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4410
        # Over REST too, through the process whose cache still says the session is open.
        assert (await chat(second.client, session, "still there?")).status_code == 409
        async with second.runtime.db.engine.connect() as conn:
            conversations = (
                await conn.execute(
                    text("SELECT status, close_reason FROM conversations WHERE chat_key = :s"),
                    {"s": session},
                )
            ).all()
            answered = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM messages m JOIN conversations c "
                        "ON c.id = m.conversation_id WHERE c.chat_key = :s AND m.direction = 'out'"
                    ),
                    {"s": session},
                )
            ).scalar()
    # No new conversation was opened for the late messages, and only "hi" was answered.
    assert [tuple(r) for r in conversations] == [("closed", "ended")]
    assert answered == 1


async def test_deeply_nested_frames_get_error_frames_not_tracebacks(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    nested = "[" * 200_000 + "]" * 200_000
    async with served(api.app) as base:
        session = await api.new_session()
        # Before authentication: the first frame should be the key.
        ws = await connect(f"ws://{base}/api/v1/ws/{session}", max_size=None)
        await ws.send(nested[:60_000])
        refused = await frame(ws)
        assert refused["code"] == "unauthorized" and "key frame" in refused["detail"]
        with pytest.raises(ConnectionClosed) as closed:
            await frame(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

        # After it: an error frame, and the socket stays open for the next message.
        async with await open_socket(base, session) as ws:
            await frame(ws)
            for bad in (
                '{"message": ' + "[" * 30_000,
                '{"message": {"a": ' * 3000 + "1" + "}" * 3000,
            ):
                await ws.send(bad)
                error = await frame(ws)
                assert error["type"] == "error" and error["code"] in ("invalid", "too_large")
                assert len(error["detail"]) < 400
            await ws.send(json.dumps({"message": "hi"}))
            _, reply = await until_reply(ws)
            assert reply["reply"].startswith("Hello!")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "RecursionError" not in caplog.text


def _open_sessions(scrape: str) -> float:
    line = next(x for x in scrape.splitlines() if x.startswith("esoteric_active_sessions{"))
    return float(line.rsplit(" ", 1)[1])


async def test_metrics_scrapes_read_open_sessions_at_most_every_15_seconds(api: Api) -> None:
    now = [1000.0]
    metrics = api.app.state.metrics
    metrics._clock = lambda: now[0]
    session = await api.new_session()
    assert (await chat(api.client, session, "hi")).status_code == 200
    first = await api.client.get("/metrics")
    assert _open_sessions(first.text) == 1
    # A second conversation opens; scrapes in the next 15 s reuse the figure read before it.
    other = await api.new_session()
    assert (await chat(api.client, other, "hi")).status_code == 200
    for _ in range(20):
        now[0] += 0.5
        assert _open_sessions((await api.client.get("/metrics")).text) == 1
    now[0] += 6
    assert _open_sessions((await api.client.get("/metrics")).text) == 2


async def test_ready_shows_no_paths_or_ids(tmp_path: Path) -> None:
    async with running_api(tmp_path) as api:
        body = (await api.client.get("/ready")).text
    # The knowledge base is missing its model: said, without the folder it looked in.
    assert "knowledge" in body
    assert (
        str(tmp_path) not in body and "/" not in json.loads(body)["checks"]["knowledge"]["detail"]
    )


@pytest.mark.parametrize(
    ("ok", "detail", "shown"),
    [
        (True, "HTTP events as U0BOT12345", "ok"),
        (True, "webhook", "webhook"),
        (True, "12 chunks", "12 chunks"),
        (False, "socket mode disconnected", "socket mode disconnected"),
        (
            False,
            "no model in /srv/esoteric/models; set ESOTERIC_EMBEDDING_MODEL_DIR",
            "unavailable; check ESOTERIC_EMBEDDING_MODEL_DIR",
        ),
        (False, "OperationalError('unable to open database file /var/lib/x.db')", "unavailable"),
    ],
)
def test_ready_details_are_plain_words(ok: bool, detail: str, shown: str) -> None:
    assert public_detail(ok, detail) == shown


def test_the_web_config_repr_shows_no_key() -> None:
    config = WebConfig(api_keys=(KEY, OTHER_KEY), page_key=KEY)
    assert KEY not in repr(config) and OTHER_KEY not in repr(config)


async def test_streamed_deltas_never_carry_what_the_checks_withhold(
    tmp_path: Path, groq_server: GroqStandIn
) -> None:
    leaked = (
        "Happy to help. Call our manager on 9123456780 today. You are definitely approved for "
        "this loan. The rate starts at 8.5%. Anything else?"
    )
    groq_server.script(groq.text(leaked, token_delay=0.03))
    before, reply, _ = await ask_over_socket(tmp_path, groq_server, "can I get a home loan?")
    deltas = [f["text"] for f in before if f["type"] == "delta"]
    assert deltas, "the reply streamed"
    assert "".join(deltas).startswith("Happy to help.")
    for shown in [*deltas, reply["reply"]]:
        assert "9123456780" not in shown
        assert "definitely approved" not in shown
