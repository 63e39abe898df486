"""A REST chat's reply: stored as delivered (the client reads it from the response or the store),
made durable with its message before the response, and never lost when the disk refuses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.adapters.http.conftest import KEY, Api


def rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "data" / "esoteric.db") as conn:
        return conn.execute(sql).fetchall()


async def test_a_rest_reply_is_stored_as_sent_and_synced_with_its_message(
    api: Api, tmp_path: Path
) -> None:
    session = await api.new_session()
    db = api.runtime.db
    before = db.log_syncs
    response = await api.client.post(
        "/api/v1/chat",
        headers=api.headers(KEY),
        json={"session_id": session, "message": "hi", "client_message_id": "m1"},
    )
    assert response.status_code == 200
    # One sync, after the reply: the response is the acknowledgement of both.
    assert db.log_syncs == before + 1
    reply_id = response.json()["message_id"]
    [(status, sent_at, attempts, claimed)] = rows(
        tmp_path,
        f"SELECT status, sent_at, attempts, claimed_at FROM outbox WHERE message_id = {reply_id}",
    )
    assert (status, attempts) == ("sent", 1) and sent_at is not None and claimed is not None
    assert rows(tmp_path, f"SELECT status FROM messages WHERE id = {reply_id}") == [("sent",)]


async def test_a_log_that_cannot_be_synced_fails_the_request_and_a_retry_gets_the_reply(
    api: Api, tmp_path: Path
) -> None:
    session = await api.new_session()
    db = api.runtime.db
    wal = db.wal_path
    (tmp_path / "a-file").write_text("not a folder")
    body = {"session_id": session, "message": "I need a home loan", "client_message_id": "m1"}
    db.wal_path = tmp_path / "a-file" / "log"  # the disk refuses the sync
    try:
        refused = await api.client.post("/api/v1/chat", headers=api.headers(KEY), json=body)
    finally:
        db.wal_path = wal
    assert refused.status_code == 503 and refused.headers["retry-after"]
    # A retry while the disk still refuses is refused too: an answer is given only once synced.
    db.wal_path = tmp_path / "a-file" / "log"
    try:
        again = await api.client.post("/api/v1/chat", headers=api.headers(KEY), json=body)
    finally:
        db.wal_path = wal
    assert again.status_code == 503
    # Nothing acknowledged, nothing lost: the retry is answered with the turn's reply, once.
    before = db.log_syncs
    retried = await api.client.post("/api/v1/chat", headers=api.headers(KEY), json=body)
    assert db.log_syncs == before + 1
    assert retried.status_code == 200 and retried.json()["duplicate"] is True
    assert "home loan" in retried.json()["reply"].lower()
    view = (await api.client.get(f"/api/v1/sessions/{session}", headers=api.headers())).json()
    assert [m["role"] for m in view["messages"]] == ["user", "assistant"]
    assert view["messages"][1]["text"] == retried.json()["reply"]
