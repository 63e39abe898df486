"""The REST API through httpx against the real app: sessions, chat, dedup, auth, limits, errors."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.catalogue import load_catalogue
from core.knowledge.types import Hit
from core.loan import emi
from core.money import format_money
from tests.adapters.http.conftest import KEY, OTHER_KEY, Api, running_api
from tests.support.keyword_knowledge import KeywordKnowledge


async def chat(
    api: Api, session: str, message: str, key: str = KEY, **extra: str
) -> httpx.Response:
    body = {"session_id": session, "message": message, **extra}
    return await api.client.post("/api/v1/chat", headers=api.headers(key), json=body)


def rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "data" / "esoteric.db") as conn:
        return conn.execute(sql).fetchall()


# -- the API is off without keys --------------------------------------------------------------


async def test_without_api_keys_the_api_and_page_are_absent(tmp_path: Path) -> None:
    async with running_api(tmp_path, api_keys="") as api:
        assert (await api.client.post("/api/v1/sessions", headers=api.headers())).status_code == 404
        assert (await api.client.get("/")).status_code == 404
        assert (await api.client.get("/health")).json() == {"status": "ok"}
        schema = (await api.client.get("/openapi.json")).json()
        assert not [p for p in schema["paths"] if p.startswith("/api/")]


# -- a whole conversation ---------------------------------------------------------------------


async def test_a_session_quotes_the_exact_emi_and_keeps_its_history(api: Api) -> None:
    session = await api.new_session()
    assert len(session) >= 32  # unguessable: 24 random bytes
    greeting = (await chat(api, session, "hi")).json()
    assert [c["label"] for c in greeting["choices"]][:2] == ["Home Loan", "Personal Loan"]
    home = greeting["choices"][0]["value"]
    for message in (home, "25 lakh", "20 years"):
        assert (await chat(api, session, message)).status_code == 200
    quote = (await chat(api, session, "my salary is 1.2 lakh a month")).json()
    rate = load_catalogue().get("home").annual_rate
    assert f"EMI: {format_money(emi(2_500_000, rate, 240))} per month" in quote["reply"]
    assert quote["session_id"] == session and quote["duplicate"] is False

    view = (await api.client.get(f"/api/v1/sessions/{session}", headers=api.headers())).json()
    assert view["status"] == "active"
    assert [m["role"] for m in view["messages"]] == ["user", "assistant"] * 5
    assert [m["text"] for m in view["messages"][::2]][1:] == [
        home,
        "25 lakh",
        "20 years",
        ("my salary is 1.2 lakh a month"),
    ]
    assert view["messages"][1]["choices"][0]["label"] == "Home Loan"
    assert view["messages"][-1]["text"] == quote["reply"]
    # Each reply says which message it answers.
    messages = view["messages"]
    assert [m["answers"] for m in messages[1::2]] == [[m["id"]] for m in messages[::2]]
    assert all(m["answers"] == [] for m in messages[::2])
    assert view["created_at"] <= view["last_activity_at"]


async def test_deleting_a_session_ends_it_but_keeps_its_history(api: Api) -> None:
    session = await api.new_session()
    await chat(api, session, "hi")
    deleted = await api.client.delete(f"/api/v1/sessions/{session}", headers=api.headers())
    assert deleted.status_code == 204
    after = await chat(api, session, "hello again")
    assert after.status_code == 409 and "ended" in after.json()["detail"]
    view = (await api.client.get(f"/api/v1/sessions/{session}", headers=api.headers())).json()
    assert view["status"] == "ended" and view["ended_at"] is not None
    assert len(view["messages"]) == 2


# -- another key's sessions --------------------------------------------------------------------


async def test_another_keys_session_is_invisible(api: Api) -> None:
    mine = await api.new_session(KEY)
    await chat(api, mine, "hi")
    path = f"/api/v1/sessions/{mine}"
    for response in (
        await api.client.get(path, headers=api.headers(OTHER_KEY)),
        await api.client.delete(path, headers=api.headers(OTHER_KEY)),
        await chat(api, mine, "I need a car loan", key=OTHER_KEY),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "no such session for this API key"}
    # Exactly what an unknown id gets: nothing tells the other key that the session exists.
    unknown = await api.client.get("/api/v1/sessions/" + "A" * 32, headers=api.headers(OTHER_KEY))
    assert unknown.json() == {"detail": "no such session for this API key"}
    view = (await api.client.get(path, headers=api.headers(KEY))).json()
    assert view["status"] == "active" and len(view["messages"]) == 2


# -- dedup and order ---------------------------------------------------------------------------


async def test_a_retried_message_is_answered_once(api: Api, tmp_path: Path) -> None:
    session = await api.new_session()
    first = (await chat(api, session, "I need a car loan", client_message_id="m-1")).json()
    again = (await chat(api, session, "I need a car loan", client_message_id="m-1")).json()
    assert again["duplicate"] is True and again["reply"] == first["reply"]
    # The retry names the original reply, never null.
    assert again["message_id"] == first["message_id"] is not None
    # Both at once: the second waits for the first's answer instead of starting another turn.
    both = await asyncio.gather(
        chat(api, session, "6 lakh", client_message_id="m-2"),
        chat(api, session, "6 lakh", client_message_id="m-2"),
    )
    replies = [r.json() for r in both]
    assert replies[0]["reply"] == replies[1]["reply"]
    assert replies[0]["message_id"] == replies[1]["message_id"] is not None
    assert sorted(r["duplicate"] for r in replies) == [False, True]
    assert rows(tmp_path, "select count(*) from messages where direction = 'in'") == [(2,)]
    assert api.runtime.service.counters.dedup_hits >= 1


async def test_message_ids_of_different_sessions_do_not_collide(api: Api) -> None:
    one, two = await api.new_session(), await api.new_session()
    a = (await chat(api, one, "I need a car loan", client_message_id="1")).json()
    b = (await chat(api, two, "I need a home loan", client_message_id="1")).json()
    assert not a["duplicate"] and not b["duplicate"]
    assert "Car Loan" in a["reply"] and "Home Loan" in b["reply"]


async def test_concurrent_messages_of_one_session_are_answered_in_order(api: Api) -> None:
    session = await api.new_session()
    await chat(api, session, "I need a home loan")
    # Sent together: the core takes them one turn at a time in arrival order.
    amount, tenure = await asyncio.gather(
        chat(api, session, "25 lakh", client_message_id="a"),
        chat(api, session, "20 years", client_message_id="b"),
    )
    assert "how long" in amount.json()["reply"]
    assert "monthly income" in tenure.json()["reply"]


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
    ids=["none", "wrong-key", "wrong-bearer", "no-scheme"],
)
async def test_requests_without_a_valid_key_are_refused(api: Api, headers: dict[str, str]) -> None:
    response = await api.client.post("/api/v1/sessions", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "API key" in response.json()["detail"]


async def test_a_bearer_token_works_like_the_header(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/sessions", headers={"Authorization": f"Bearer {OTHER_KEY}"}
    )
    assert response.status_code == 201
    session = response.json()["session_id"]
    # Bound to the key, however it was presented.
    view = await api.client.get(f"/api/v1/sessions/{session}", headers=api.headers(OTHER_KEY))
    assert view.status_code == 200


# -- rate limits, sizes and validation ------------------------------------------------------------


async def test_each_key_has_its_own_rate_limit(tmp_path: Path) -> None:
    async with running_api(tmp_path, rate_limit_per_minute=3) as api:
        statuses = [
            (await api.client.post("/api/v1/sessions", headers=api.headers())).status_code
            for _ in range(4)
        ]
        assert statuses == [201, 201, 201, 429]
        limited = await api.client.post("/api/v1/sessions", headers=api.headers())
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert "rate limit" in limited.json()["detail"]
        other = await api.client.post("/api/v1/sessions", headers=api.headers(OTHER_KEY))
        assert other.status_code == 201


async def test_oversize_bodies_are_refused_before_reading(tmp_path: Path) -> None:
    async with running_api(tmp_path, max_body_bytes=2048) as api:
        session = await api.new_session()
        big = {"session_id": session, "message": "x" * 3000}
        declared = await api.client.post("/api/v1/chat", headers=api.headers(), json=big)
        assert declared.status_code == 413
        assert declared.json() == {"detail": "request body larger than 2048 bytes"}

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            for _ in range(10):
                yield b"x" * 512

        streamed = await api.client.post(
            "/api/v1/chat",
            headers={**api.headers(), "Content-Type": "application/json"},
            content=chunks(),
        )
        assert streamed.status_code == 413
    assert rows(tmp_path, "select count(*) from messages") == [(0,)]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"message": "hi"}, "session_id", "Field required"),
        ({"session_id": "short", "message": "hi"}, "session_id", "should match pattern"),
        ({"session_id": "S" * 32}, "message", "Field required"),
        ({"session_id": "S" * 32, "message": "   "}, "message", "message is empty"),
        ({"session_id": "S" * 32, "message": "x" * 4001}, "message", "at most 4000"),
        ({"session_id": "S" * 32, "message": "hi", "extra": 1}, "extra", "Extra inputs"),
        (
            {"session_id": "S" * 32, "message": "hi", "client_message_id": "has spaces"},
            "client_message_id",
            "should match pattern",
        ),
    ],
)
async def test_invalid_bodies_get_a_clear_422(
    api: Api, body: dict[str, object], field: str, words: str
) -> None:
    response = await api.client.post("/api/v1/chat", headers=api.headers(), json=body)
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert any(p["loc"][-1] == field and words in p["msg"] for p in problems), problems


async def test_malformed_json_is_a_422_not_a_crash(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/chat",
        headers={**api.headers(), "Content-Type": "application/json"},
        content=b'{"session_id": ',
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


# -- retrieval ---------------------------------------------------------------------------------


async def test_rag_query_without_a_knowledge_base_is_a_clear_503(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/rag/query", headers=api.headers(), json={"query": "home loan documents"}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"
    assert "no knowledge base" in response.json()["detail"]
    assert "ESOTERIC_EMBEDDING_MODEL_DIR" in response.json()["detail"]


async def test_rag_query_returns_scored_sources(tmp_path: Path) -> None:
    def with_knowledge(runtime: object) -> None:
        runtime.knowledge = KeywordKnowledge()  # type: ignore[attr-defined]

    async with running_api(tmp_path, prepare=with_knowledge) as api:
        response = await api.client.post(
            "/api/v1/rag/query",
            headers=api.headers(),
            json={"query": "documents for a home loan", "top_k": 2},
        )
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 2
    assert results[0]["source"] == "home-loan.md"
    assert results[0]["heading"] == "Home Loan > Documents required"
    assert "salary slips" in results[0]["text"]
    assert results[0]["score"] >= results[1]["score"] > 0


class BrokenKnowledge:
    """A knowledge base whose store fails in a way nobody planned for."""

    async def search(self, query: str, k: int = 4) -> list[Hit]:
        raise RuntimeError("chroma segment /var/lib/secret-path corrupt")


async def test_unexpected_errors_answer_500_without_internals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(runtime: object) -> None:
        runtime.knowledge = BrokenKnowledge()  # type: ignore[attr-defined]

    async with running_api(tmp_path, prepare=broken) as api:
        transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://esoteric") as client:
            response = await client.post(
                "/api/v1/rag/query", headers=api.headers(), json={"query": "anything"}
            )
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "secret-path" not in response.text and "Traceback" not in response.text
    assert "secret-path" in caplog.text  # logged for the operator


# -- operations ------------------------------------------------------------------------------------


async def test_ready_reports_each_part(api: Api) -> None:
    response = await api.client.get("/ready")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"] == {"ok": True}
    assert checks["web"]["ok"] is True
    assert checks["knowledge"]["ok"] is False and checks["knowledge"]["degraded"] is True
    assert "ESOTERIC_EMBEDDING_MODEL_DIR" in checks["knowledge"]["detail"]


async def test_metrics_count_turns_latency_dedup_and_sessions(api: Api) -> None:
    session = await api.new_session()
    await chat(api, session, "hi", client_message_id="x")
    await chat(api, session, "hi", client_message_id="x")
    await chat(api, session, "I need a car loan")
    text = (await api.client.get("/metrics")).text
    assert "esoteric_turns_total 2.0" in text
    assert "esoteric_dedup_hits_total 1.0" in text
    assert "esoteric_turn_latency_seconds_count 2.0" in text
    assert 'esoteric_active_sessions{channel="web"} 1.0' in text
    assert 'esoteric_llm_tokens_total{kind="prompt"} 0.0' in text
    assert "esoteric_queued_messages 0.0" in text
    assert 'route="/api/v1/chat",status="200"} 3.0' in text
    # Scraping twice does not count the same turns twice.
    again = (await api.client.get("/metrics")).text
    assert "esoteric_turn_latency_seconds_count 2.0" in again


async def test_request_ids_are_echoed_or_made(api: Api) -> None:
    given = await api.client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    made = await api.client.get("/health", headers={"X-Request-ID": "bad id <script>"})
    assert len(made.headers["X-Request-ID"]) == 32 and "<" not in made.headers["X-Request-ID"]


async def test_cors_allows_only_configured_origins(tmp_path: Path) -> None:
    async with running_api(tmp_path, cors_origins="https://shop.example.com") as api:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key,content-type",
        }
        allowed = await api.client.options(
            "/api/v1/chat", headers={"Origin": "https://shop.example.com", **preflight}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example.com"
        refused = await api.client.options(
            "/api/v1/chat", headers={"Origin": "https://evil.example.net", **preflight}
        )
        assert "access-control-allow-origin" not in refused.headers


async def test_the_chat_page_is_served_with_the_page_key(tmp_path: Path) -> None:
    async with running_api(tmp_path, web_chat_key=KEY) as api:
        page = await api.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f'<meta name="esoteric-key" content="{KEY}">' in page.text
    assert 'const API = "/api/v1"' in page.text and "/ws/" in page.text
