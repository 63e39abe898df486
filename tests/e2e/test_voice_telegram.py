"""Voice notes on Telegram: speech synthesised with espeak-ng, encoded as Telegram sends it
(OGG/Opus), served by the stand-in through the real getFile and file download, transcribed by
the Groq stand-in through the real groq SDK, and the loan conversation going on from the
transcript to the exact EMI. Limits, failures and /retry each get their clear answer, and
nothing is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.i18n import tr
from core.loan import emi
from core.money import format_money
from tests.support.audio import speak
from tests.support.desk import REP_A, Desk, running_desk
from tests.support.groq_server import GroqStandIn, audio_error, heard
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer

CHAT = 7101
ASK = "I need a home loan of 25 lakh for 20 years"
INCOME = "my salary is one lakh fifty thousand a month"


def groq(groq_server: GroqStandIn, **more: Any) -> dict[str, Any]:
    # The chat model answers 500 (never scripted here): the scripted agent answers every turn,
    # which keeps the loan flow exact; transcription is what is under test.
    return {
        "GROQ_API_KEY": "gsk_FakeKeyForLocalTestsOnly",
        "GROQ_BASE_URL": groq_server.base_url,
        "llm_max_retries": 0,
        "llm_breaker_failures": 100,
        "llm_turn_deadline_seconds": 5.0,
        **more,
    }


async def _voice_rows(desk: Desk) -> list[Any]:
    return await desk.rows(
        "SELECT id, text, status, meta FROM messages WHERE direction = 'in' ORDER BY id"
    )


def _expected_emi(desk: Desk, amount: int, months: int) -> str:
    return format_money(emi(amount, desk.runtime.catalogue.get("home").annual_rate, months))


async def test_a_voice_note_is_heard_and_the_quote_follows(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    first = speak(ASK)
    second = speak(INCOME, fmt="ogg")
    groq_server.hear(heard(ASK, duration=first.duration), heard("my salary is 1.5 lakh a month"))
    async with running_desk(tmp_path, telegram_api, slack_api, **groq(groq_server)) as desk:
        await desk.voice(CHAT, first.data, first.duration)
        assert "monthly income" in desk.telegram_texts(CHAT)[-1]
        await desk.voice(CHAT, second.data, second.duration)
        reply = desk.telegram_texts(CHAT)[-1]
        assert f"EMI: {_expected_emi(desk, 2_500_000, 240)}" in reply

        # The API received exactly the bytes Telegram served, as a file it accepts.
        sent = groq_server.audio_requests
        assert [r.data for r in sent] == [first.data, second.data]
        assert all(r.filename.endswith(".ogg") for r in sent)
        assert sent[0].fields["model"] == "whisper-large-v3-turbo"
        assert sent[0].fields["response_format"] == "verbose_json"
        assert sent[0].headers["Authorization"] == "Bearer gsk_FakeKeyForLocalTestsOnly"
        assert len(telegram_api.calls_to("getFile")) == 2 and len(telegram_api.downloads) == 2

        # The transcript is the message's text; what was heard is kept with it, not the audio.
        rows = await _voice_rows(desk)
        assert [r.text for r in rows] == [ASK, "my salary is 1.5 lakh a month"]
        audio = desk.json(rows[0].meta)["audio"]
        assert audio["transcript"] == ASK and audio["language"] == "en"
        assert audio["kind"] == "voice" and audio["file_id"].startswith("voice-")
        assert audio["duration"] == first.duration
        assert await desk.scalar("SELECT count(*) FROM voice_clips") == 0


async def test_a_hindi_voice_note_gets_a_hindi_answer(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    speech = speak("मुझे पच्चीस लाख का होम लोन चाहिए, बीस साल के लिए", voice="hi")
    said = "मुझे 25 लाख का होम लोन चाहिए, 20 साल के लिए"
    groq_server.hear(heard(said, language="hindi", duration=speech.duration))
    async with running_desk(tmp_path, telegram_api, slack_api, **groq(groq_server)) as desk:
        await desk.voice(CHAT, speech.data, speech.duration)
        assert desk.telegram_texts(CHAT)[-1].endswith(
            tr("hi", "What is your net monthly income (take-home salary or business income)?")
        )
        assert groq_server.audio_requests[0].data == speech.data
        [row] = await _voice_rows(desk)
        assert desk.json(row.meta)["audio"]["language"] == "hi"


async def test_a_short_note_is_said_back(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    speech = speak("home loan")
    groq_server.hear(heard("home loan", duration=speech.duration))
    async with running_desk(tmp_path, telegram_api, slack_api, **groq(groq_server)) as desk:
        await desk.voice(CHAT, speech.data, speech.duration)
        reply = desk.telegram_texts(CHAT)[-1]
        assert reply.startswith('You said: "home loan"\n\n')
        assert "How much would you like to borrow" in reply


async def test_limits_are_answered_before_any_download(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    speech = speak(ASK)
    settings = groq(groq_server, voice_max_seconds=60)
    async with running_desk(tmp_path, telegram_api, slack_api, **settings) as desk:
        await desk.voice(CHAT, speech.data, 300)
        assert desk.telegram_texts(CHAT)[-1].startswith(
            "That voice note is 300 seconds long; I can listen to up to 60 seconds."
        )
        await desk.voice(CHAT, speech.data, speech.duration, size=21 * 1024 * 1024)
        assert "too large for me (21.0 MB; the limit is 20 MB)" in desk.telegram_texts(CHAT)[-1]
        await desk.voice(CHAT, speech.data, speech.duration, kind="audio", mime="audio/amr")
        assert desk.telegram_texts(CHAT)[-1].startswith("I can't play AMR audio.")
        # Nothing was fetched or sent for transcription, and every message is kept.
        assert telegram_api.calls_to("getFile") == [] and groq_server.audio_requests == []
        rows = await _voice_rows(desk)
        assert len(rows) == 3 and all(r.status == "answered" for r in rows)


async def test_a_corrupt_note_and_a_failing_api_are_answered_and_retry_hears_it(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    speech = speak(ASK)
    settings = groq(groq_server, llm_max_retries=2, llm_retry_backoff_seconds=0.01)
    async with running_desk(tmp_path, telegram_api, slack_api, **settings) as desk:
        # Not audio at all: the API refuses it (Groq's 400), once, and the customer is told.
        groq_server.hear(heard(ASK))
        await desk.voice(CHAT, b"not an ogg file at all", 3)
        assert desk.telegram_texts(CHAT)[-1].startswith("I couldn't read that audio file.")
        assert len(groq_server.audio_requests) == 1

        # The API fails three times (a 429, then 500s): retried, then a polite answer.
        groq_server.heard.clear()
        groq_server.hear(audio_error(429), audio_error(500), audio_error(500))
        await desk.voice(CHAT, speech.data, speech.duration)
        assert "/retry" in desk.telegram_texts(CHAT)[-1]
        assert len(groq_server.audio_requests) == 4

        # /retry transcribes the voice note that was not heard, and the flow goes on.
        groq_server.hear(heard(ASK))
        await desk.customer(CHAT, "/retry")
        assert "monthly income" in desk.telegram_texts(CHAT)[-1]
        assert groq_server.audio_requests[-1].data == speech.data
        rows = await _voice_rows(desk)
        assert rows[1].text == ASK  # the voice note itself now holds what was said
        await desk.customer(CHAT, "retry")  # the word works too (Slack keeps /retry)
        assert desk.telegram_texts(CHAT)[-1].startswith("There's no voice note waiting")


async def test_without_a_key_the_note_is_kept_for_later(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    speech = speak(ASK)
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        await desk.voice(CHAT, speech.data, speech.duration)
        assert desk.telegram_texts(CHAT)[-1].startswith(
            "Sorry, I can't listen to voice notes right now."
        )
        [row] = await _voice_rows(desk)
        audio = desk.json(row.meta)["audio"]
        assert "transcript" not in audio and audio["file_id"].startswith("voice-")


async def test_kept_audio_when_asked(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    speech = speak(ASK)
    groq_server.hear(heard(ASK))
    settings = groq(groq_server, keep_audio=True)
    async with running_desk(tmp_path, telegram_api, slack_api, **settings) as desk:
        await desk.voice(CHAT, speech.data, speech.duration)
        [clip] = await desk.rows("SELECT filename, data FROM voice_clips")
        assert bytes(clip.data) == speech.data and clip.filename.endswith(".ogg")


async def test_a_round_video_is_heard_too(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    speech = speak(ASK, fmt="m4a")  # MPEG-4 audio, as a round video's sound track is stored
    groq_server.hear(heard(ASK))
    async with running_desk(tmp_path, telegram_api, slack_api, **groq(groq_server)) as desk:
        await desk.voice(CHAT, speech.data, speech.duration, kind="video_note", mime="video/mp4")
        assert "monthly income" in desk.telegram_texts(CHAT)[-1]
        [request] = groq_server.audio_requests
        assert request.data == speech.data and request.filename == "video_note.mp4"


async def test_an_uncertain_note_is_said_back(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    speech = speak(ASK)
    groq_server.hear(heard(ASK, avg_logprob=-1.3))  # Whisper was unsure of what it heard
    async with running_desk(tmp_path, telegram_api, slack_api, **groq(groq_server)) as desk:
        await desk.voice(CHAT, speech.data, speech.duration)
        reply = desk.telegram_texts(CHAT)[-1]
        assert reply.startswith(f'You said: "{ASK}"\n\n') and "monthly income" in reply


async def test_a_voice_note_during_a_handoff_reaches_the_rep_as_its_transcript(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    speech = speak("Can I add my wife as a co-applicant?")
    async with running_desk(tmp_path, telegram_api, slack_api, **groq(groq_server)) as desk:
        await desk.customer(CHAT, "/human")
        card = str(desk.cards()[-1]["ts"])
        handoff = str(await desk.scalar("SELECT max(id) FROM handoffs"))
        await desk.click(REP_A, "esoteric_handoff_claim", handoff, card)
        groq_server.hear(heard("Can I add my wife as a co-applicant?"))
        asked = len(groq_server.requests)
        await desk.voice(CHAT, speech.data, speech.duration)
        await desk.slack.idle()
        said = "Can I add my wife as a co-applicant?"
        assert desk.thread(card)[-1].endswith(f":* (voice note) {said}")
        assert len(groq_server.requests) == asked  # the bot stays quiet while the rep has it
