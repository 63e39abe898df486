"""A voice note survives a crash: a real ``esoteric serve`` process, SIGKILLed while the note
is being transcribed, and again after its transcript was stored but before the reply went out.
After each restart the note is answered once, and transcribed once in all: the stored
transcript is used, never a second transcription. Counts read back from SQL and the stand-ins.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from core.store.database import Database
from tests.support.audio import speak
from tests.support.cluster import Cluster, Sender, cluster_env
from tests.support.desk import eventually
from tests.support.groq_server import GroqStandIn, Recorded, Step, heard
from tests.support.groq_server import text as llm_text
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CHAT = 8101
ASK = "I need a home loan of 25 lakh for 20 years"


async def _rows(db: Database, sql: str, **params: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


def _voice(telegram_api: TelegramServer, update_id: int, data: bytes) -> dict[str, Any]:
    file_id = f"voice-{update_id}"
    telegram_api.add_file(file_id, data, f"voice/file_{update_id}.oga")
    return {
        "voice": {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "duration": 3,
            "mime_type": "audio/ogg",
            "file_size": len(data),
        }
    }


async def test_a_voice_note_is_heard_once_across_two_crashes(
    tmp_path: Path,
    postgres_url: str,
    migrated: Database,
    redis_url: str,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
) -> None:
    speech = speak(ASK)
    chat_requests: list[Recorded] = []
    slow_chat = asyncio.Event()

    def model(request: Recorded) -> Step | None:
        chat_requests.append(request)
        # While ``slow_chat`` is set the model takes its time: the process dies meanwhile.
        return llm_text("Noted.", delay=60) if slow_chat.is_set() else llm_text("Noted.")

    groq = GroqStandIn(on_request=model)
    await groq.start()
    env = cluster_env(
        database_url=postgres_url,
        redis_url=redis_url,
        telegram_api=telegram_api.base_url,
        slack_api=slack_api.api_url,
        groq_url=groq.base_url,
        extra={
            "ESOTERIC_LLM_TURN_DEADLINE_SECONDS": "90",
            "ESOTERIC_LLM_REQUEST_TIMEOUT_SECONDS": "80",
        },
    )
    cluster = Cluster(tmp_path, env, size=1)
    sender = Sender(cluster)
    try:
        await cluster.start_all()
        # 1. Killed while the note is being transcribed.
        groq.hear(heard(ASK, delay=60))
        await sender.telegram(0, 1, CHAT, None, **_voice(telegram_api, 1, speech.data))
        await eventually(lambda: len(groq.audio_requests) == 1, "the first transcription")
        cluster.kill(0)
        await cluster.wait_dead(0)
        [row] = await _rows(migrated, "SELECT status, text FROM messages WHERE direction = 'in'")
        assert row.status == "received" and row.text == ""

        # The restarted process hears it, once, and answers it.
        groq.heard.clear()
        groq.hear(heard(ASK))
        await cluster.start(0)
        await eventually(
            lambda: telegram_api.calls_to("sendMessage", CHAT), "the first note answered", 90
        )
        assert len(groq.audio_requests) == 2
        [row] = await _rows(migrated, "SELECT status, text FROM messages WHERE direction = 'in'")
        assert row.status == "answered" and row.text == ASK

        # 2. Killed after the second note's transcript was stored, while the reply is written.
        slow_chat.set()
        asked = len(chat_requests)
        groq.hear(heard("my salary is 1.5 lakh a month"))
        await sender.telegram(0, 2, CHAT, None, **_voice(telegram_api, 2, speech.data))
        await eventually(lambda: len(groq.audio_requests) == 3, "the second transcription")
        await eventually(lambda: len(chat_requests) > asked, "the model asked for the reply")
        cluster.kill(0)
        await cluster.wait_dead(0)
        stored = await _rows(
            migrated, "SELECT status, text FROM messages WHERE direction = 'in' ORDER BY id"
        )
        assert (stored[1].status, stored[1].text) == ("received", "my salary is 1.5 lakh a month")

        slow_chat.clear()
        sent_before = len(telegram_api.calls_to("sendMessage", CHAT))
        await cluster.start(0)
        await eventually(
            lambda: len(telegram_api.calls_to("sendMessage", CHAT)) > sent_before,
            "the second note answered",
            90,
        )
        await asyncio.sleep(1.0)  # nothing more arrives: no second reply, no transcription
        assert len(groq.audio_requests) == 3  # the stored transcript was used
        assert len(telegram_api.calls_to("sendMessage", CHAT)) == sent_before + 1
        counts = await _rows(
            migrated,
            "SELECT (SELECT count(*) FROM messages WHERE direction = 'in' AND status = 'answered'),"
            " (SELECT count(*) FROM messages WHERE direction = 'out')",
        )
        assert tuple(counts[0]) == (2, 2)
        # The bytes the API got are the ones Telegram served, every time.
        assert {r.data for r in groq.audio_requests} == {speech.data}
    finally:
        await sender.aclose()
        await cluster.stop_all()
        await groq.stop()
