"""Voice notes over REST: ``POST /api/v1/sessions/{id}/voice`` through the real app, with real
speech (espeak-ng, encoded as a browser's MediaRecorder records it: WebM/Opus) transcribed by
the Groq stand-in through the real groq SDK, and the loan conversation going on from what was
heard to the exact EMI. Refusals (413, 415, 422) are clear and store nothing; a transcription
failure is answered politely and the note is kept."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.loan import emi
from core.money import format_money
from core.voice import MAX_UPLOAD_BYTES
from tests.adapters.http.conftest import OTHER_KEY, Api, running_api
from tests.support.audio import Speech, speak
from tests.support.groq_server import GroqStandIn, audio_error, heard

ASK = "I need a home loan of 25 lakh for 20 years"
INCOME = "my salary is one lakh fifty thousand a month"
HEARD_INCOME = "my salary is 1.5 lakh a month"


@pytest.fixture
async def voice_api(tmp_path: Path, groq_server: GroqStandIn) -> AsyncIterator[Api]:
    # The chat model answers 500 (never scripted here), so the scripted agent answers every
    # turn and the loan flow stays exact; transcription is what is under test.
    async with running_api(
        tmp_path,
        GROQ_API_KEY="gsk_FakeKeyForLocalTestsOnly",
        GROQ_BASE_URL=groq_server.base_url,
        llm_max_retries=0,
        llm_breaker_failures=100,
        llm_turn_deadline_seconds=5.0,
    ) as api:
        yield api


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "data" / "esoteric.db") as conn:
        return conn.execute(sql).fetchall()


async def send_voice(
    api: Api,
    session: str,
    speech: Speech,
    *,
    field: str = "audio",
    mime: str | None = None,
    key: str | None = None,
    **fields: str,
) -> httpx.Response:
    files = {field: ("voice.webm", speech.data, mime or speech.mime)}
    return await api.client.post(
        f"/api/v1/sessions/{session}/voice",
        headers=api.headers(key) if key else api.headers(),
        files=files,
        data=fields,
    )


def expected_emi(api: Api, amount: int, months: int) -> str:
    return format_money(emi(amount, api.runtime.catalogue.get("home").annual_rate, months))


async def test_a_voice_note_is_heard_and_the_quote_follows(
    voice_api: Api, groq_server: GroqStandIn, tmp_path: Path
) -> None:
    first = speak(ASK, fmt="webm")
    second = speak(INCOME, fmt="webm")
    groq_server.hear(heard(ASK, duration=first.duration), heard(HEARD_INCOME))
    session = await voice_api.new_session()

    response = await send_voice(
        voice_api, session, first, duration=f"{first.duration:.2f}", client_message_id="v-1"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transcript"] == ASK
    assert "monthly income" in body["reply"]
    assert body["session_id"] == session and body["duplicate"] is False
    assert isinstance(body["message_id"], int)

    quote = (await send_voice(voice_api, session, second)).json()
    assert quote["transcript"] == HEARD_INCOME
    assert f"EMI: {expected_emi(voice_api, 2_500_000, 240)} per month" in quote["reply"]

    # The API received exactly the uploaded bytes, named as the WebM they are.
    sent = groq_server.audio_requests
    assert [r.data for r in sent] == [first.data, second.data]
    assert all(r.filename.endswith(".webm") for r in sent)
    assert sent[0].fields["model"] == "whisper-large-v3-turbo"

    # The transcript is the stored message's text; the duration is what Whisper heard.
    view = (
        await voice_api.client.get(f"/api/v1/sessions/{session}", headers=voice_api.headers())
    ).json()
    assert [m["text"] for m in view["messages"] if m["role"] == "user"] == [ASK, HEARD_INCOME]
    assert view["messages"][-1]["text"] == quote["reply"]
    meta = json.loads(rows(tmp_path, "SELECT meta FROM messages WHERE direction = 'in'")[0][0])
    assert meta["audio"]["transcript"] == ASK
    assert meta["audio"]["duration"] == first.duration
    assert meta["audio"]["mime"] == "audio/webm" and meta["audio"]["size"] == len(first.data)


async def test_a_retry_with_the_same_client_message_id_is_heard_once(
    voice_api: Api, groq_server: GroqStandIn
) -> None:
    speech = speak(ASK, fmt="webm")
    groq_server.hear(heard(ASK), heard("something else entirely"))
    session = await voice_api.new_session()
    first = await send_voice(voice_api, session, speech, client_message_id="same-1")
    again = await send_voice(voice_api, session, speech, client_message_id="same-1")
    assert first.status_code == again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["transcript"] == first.json()["transcript"] == ASK
    assert again.json()["reply"] == first.json()["reply"]
    assert again.json()["message_id"] == first.json()["message_id"]
    assert len(groq_server.audio_requests) == 1


async def test_the_file_field_and_a_video_webm_type_are_accepted(
    voice_api: Api, groq_server: GroqStandIn
) -> None:
    speech = speak(ASK, fmt="webm")
    groq_server.hear(heard(ASK))
    session = await voice_api.new_session()
    response = await send_voice(voice_api, session, speech, field="file", mime="video/webm")
    assert response.status_code == 200, response.text
    assert response.json()["transcript"] == ASK
    assert groq_server.audio_requests[0].data == speech.data


async def test_a_failed_transcription_is_answered_politely_and_the_note_kept(
    voice_api: Api, groq_server: GroqStandIn, tmp_path: Path
) -> None:
    speech = speak(ASK, fmt="webm")
    groq_server.hear(audio_error(500), audio_error(500))
    session = await voice_api.new_session()
    response = await send_voice(voice_api, session, speech, duration="3.456")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transcript"] is None
    assert "couldn't listen to your voice note" in body["reply"] and "/retry" in body["reply"]
    # The message and its audio are kept, for /retry.
    (meta,) = rows(tmp_path, "SELECT meta FROM messages WHERE direction = 'in'")[0]
    audio = json.loads(meta)["audio"]
    assert audio["stored"] is True and "transcript" not in audio
    assert audio["duration"] == 3.46  # as the browser said
    assert rows(tmp_path, "SELECT data FROM voice_clips") == [(speech.data,)]


# -- refusals: clear, and nothing stored or sent ----------------------------------------------


def assert_nothing_kept(tmp_path: Path, groq_server: GroqStandIn) -> None:
    assert rows(tmp_path, "SELECT count(*) FROM messages") == [(0,)]
    assert rows(tmp_path, "SELECT count(*) FROM voice_clips") == [(0,)]
    assert groq_server.audio_requests == []


async def test_no_file_is_a_422_naming_the_field(
    voice_api: Api, groq_server: GroqStandIn, tmp_path: Path
) -> None:
    session = await voice_api.new_session()
    url = f"/api/v1/sessions/{session}/voice"
    for request in (
        {"data": {"duration": "3"}, "files": {"other": ("x.txt", b"x", "text/plain")}},
        {"json": {"message": "hello"}},
        {"content": b""},
    ):
        response = await voice_api.client.post(url, headers=voice_api.headers(), **request)
        assert response.status_code == 422, response.text
        (problem,) = response.json()["detail"]
        assert problem["loc"] == ["body", "audio"]
        assert "'audio'" in problem["msg"]
    empty = await voice_api.client.post(
        url, headers=voice_api.headers(), files={"audio": ("a.webm", b"", "audio/webm")}
    )
    assert empty.status_code == 422 and "empty" in empty.text
    bad_id = await send_voice(voice_api, session, speak(ASK, fmt="webm"), client_message_id="a b")
    assert bad_id.status_code == 422 and "client_message_id" in bad_id.text
    assert_nothing_kept(tmp_path, groq_server)


async def test_a_file_that_is_not_audio_is_a_415_naming_the_accepted_types(
    voice_api: Api, groq_server: GroqStandIn, tmp_path: Path
) -> None:
    session = await voice_api.new_session()
    for mime in ("text/plain", "image/png", "application/octet-stream"):
        response = await voice_api.client.post(
            f"/api/v1/sessions/{session}/voice",
            headers=voice_api.headers(),
            files={"audio": ("voice.webm", b"\x1a\x45\xdf\xa3 not really", mime)},
        )
        assert response.status_code == 415, response.text
        detail = response.json()["detail"]
        assert mime in detail and "audio/*" in detail and "video/webm" in detail
    assert_nothing_kept(tmp_path, groq_server)


async def _chunks(total: int, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"\0" * piece


async def test_audio_over_25_mb_is_a_413(
    voice_api: Api, groq_server: GroqStandIn, tmp_path: Path
) -> None:
    session = await voice_api.new_session()
    url = f"/api/v1/sessions/{session}/voice"
    # A body declared far past the limit: refused from Content-Length, unread.
    huge = await voice_api.client.post(
        url,
        headers=voice_api.headers(),
        files={
            "audio": ("v.webm", b"\x1a\x45\xdf\xa3" + b"\0" * MAX_UPLOAD_BYTES * 2, "audio/webm")
        },
    )
    assert huge.status_code == 413 and "25 MB" in huge.json()["detail"]
    # A file one byte over, within the body's allowance for the form around it: the read size.
    over = await voice_api.client.post(
        url,
        headers=voice_api.headers(),
        files={
            "audio": ("v.webm", b"\x1a\x45\xdf\xa3" + b"\0" * (MAX_UPLOAD_BYTES - 3), "audio/webm")
        },
    )
    assert over.status_code == 413 and "25 MB" in over.json()["detail"]
    # No declared length (chunked): counted while it arrives.
    streamed = await voice_api.client.post(
        url,
        headers={**voice_api.headers(), "Content-Type": "multipart/form-data; boundary=xyz"},
        content=_chunks(MAX_UPLOAD_BYTES * 2),
    )
    assert streamed.status_code == 413 and "25 MB" in streamed.json()["detail"]
    # Exactly at the limit is taken: stored whole with its message.
    at_limit = await voice_api.client.post(
        url,
        headers=voice_api.headers(),
        files={
            "audio": ("v.webm", b"\x1a\x45\xdf\xa3" + b"\0" * (MAX_UPLOAD_BYTES - 4), "audio/webm")
        },
    )
    assert at_limit.status_code == 200, at_limit.text
    assert rows(tmp_path, "SELECT length(data) FROM voice_clips") == [(MAX_UPLOAD_BYTES,)]
    assert rows(tmp_path, "SELECT count(*) FROM messages WHERE direction = 'in'") == [(1,)]


async def test_the_route_has_the_chat_routes_auth_and_session_checks(
    voice_api: Api, groq_server: GroqStandIn
) -> None:
    speech = speak(ASK, fmt="webm")
    session = await voice_api.new_session()
    url = f"/api/v1/sessions/{session}/voice"
    files = {"audio": ("voice.webm", speech.data, "audio/webm")}
    assert (await voice_api.client.post(url, files=files)).status_code == 401
    other = await voice_api.client.post(url, headers=voice_api.headers(OTHER_KEY), files=files)
    assert other.status_code == 404
    await voice_api.client.delete(f"/api/v1/sessions/{session}", headers=voice_api.headers())
    ended = await voice_api.client.post(url, headers=voice_api.headers(), files=files)
    assert ended.status_code == 409
    assert groq_server.audio_requests == []
