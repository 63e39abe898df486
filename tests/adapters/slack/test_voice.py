"""Voice on Slack: audio files shared in a DM or with a mention, and a rep's voice clip in a lead
card's thread. Speech is synthesised with espeak-ng and encoded as Slack's clients upload it
(WebM/Opus from the desktop recorder, M4A from phones), served by the stand-in Slack through the
real files.info and the private download (bot token required), and transcribed by the Groq
stand-in through the real groq SDK. Limits and failures get their clear answers, and nothing is
lost."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.slack import SlackChannel
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from core.loan import emi
from core.money import format_money
from core.store.models import Message
from tests.adapters.slack.conftest import BOT_TOKEN, SALES, SECRET, SlackClient, event, sign
from tests.support.audio import speak
from tests.support.desk import QUALIFY, REP_A, REP_A_NAME, Desk, running_desk
from tests.support.groq_server import GroqStandIn, audio_error, heard
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer

DM = "D0DMCHAN01"
ROOM = "C0CHANNEL01"
# Slack is the sales team's side: a rep asks about a product, then for an EMI, by voice.
ASK = "What is the processing fee on a car loan?"
EMI_SAID = "EMI for twenty five lakh at eight point five percent, two hundred forty months"
# What Whisper writes (the desk's EMI reads "AMOUNT RATE MONTHS" and no trailing full stop).
EMI_HEARD = "EMI 25 lakh, 8.5%, 240."  # as Whisper punctuates speech
_serial = itertools.count(1)


def groq(groq_server: GroqStandIn) -> dict[str, Any]:
    # The chat model answers 500 (never scripted here): the scripted agent answers every turn,
    # which keeps the loan flow exact; hearing the audio is what is under test.
    return {
        "GROQ_API_KEY": "gsk_FakeKeyForLocalTestsOnly",
        "GROQ_BASE_URL": groq_server.base_url,
        "llm_max_retries": 0,
        "llm_retry_backoff_seconds": 0.01,
        "llm_breaker_failures": 100,
        "llm_turn_deadline_seconds": 5.0,
    }


@pytest.fixture
async def runtime(
    tmp_path: Path, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> AsyncIterator[Runtime]:
    settings = load_settings(
        data_dir=tmp_path,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack_api.api_url,
        slack_sales_channel=SALES,
        **groq(groq_server),
    )
    async with open_runtime(settings, scheduler=False) as rt:
        yield rt


def shared(kind: str, file: dict[str, Any], text: str = "", **changes: Any) -> dict[str, Any]:
    """A file share as Slack delivers it: a ``message`` (subtype file_share) or an
    ``app_mention`` event carrying the file object."""
    body = event(kind, text=text, files=[file], upload=True, display_as_bot=False, **changes)
    if body["event"]["type"] == "message":
        body["event"]["subtype"] = "file_share"
    serial = next(_serial)
    body["event_id"] = f"EvVOICE{serial:06d}"
    body["event"]["ts"] = body["event"]["event_ts"] = f"1767300000.{serial:06d}"
    body["event"].pop("client_msg_id", None)
    return body


def replies(slack_api: SlackStandIn, channel: str) -> list[str]:
    return [str(p.get("text", "")) for p in slack_api.posts() if p.get("channel") == channel]


def expected_emi() -> str:
    return format_money(emi(2_500_000, "8.5", 240), "INR", paise=True)


def fee_answered(runtime: Runtime, reply: str) -> bool:
    car = runtime.catalogue.get("car")
    return f"*{car.name}*" in reply and f"{car.processing_fee_percent.normalize():f}%" in reply


async def inbound(runtime: Runtime) -> list[Message]:
    async with runtime.db.transaction() as session:
        query = select(Message).where(Message.direction == "in").order_by(Message.id)
        return list((await session.scalars(query)).all())


async def test_a_dm_with_webm_clips_is_heard_and_the_quote_follows(
    slack: SlackClient,
    channel: SlackChannel,
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
    runtime: Runtime,
) -> None:
    first, second = speak(ASK, fmt="webm"), speak(EMI_SAID, fmt="webm")
    seconds = round(second.duration * 1000) / 1000  # Slack's duration_ms, in seconds
    groq_server.hear(heard(ASK, duration=first.duration), heard(EMI_HEARD, duration=seconds))
    # An uploaded recording, then a clip recorded in Slack (no extension in its name).
    upload = slack_api.add_file(first.data, "loan question.webm", "audio/webm")
    clip = slack_api.add_file(
        second.data,
        "audio_message",
        "audio/webm",
        filetype="webm",
        subtype="slack_audio",
        duration_ms=round(second.duration * 1000),
    )
    assert (await slack.event(shared("event_message_im.json", upload))).status_code == 200
    await channel.idle()
    assert fee_answered(runtime, replies(slack_api, DM)[-1])
    assert (await slack.event(shared("event_message_im.json", clip))).status_code == 200
    await channel.idle()
    assert f"*EMI: {expected_emi()} per month*" in replies(slack_api, DM)[-1]

    # Slack was asked about each file and served it to the bot token only; the API received
    # exactly those bytes, named as a file type it takes.
    assert [c.params["file"] for c in slack_api.calls_to("files.info")] == [
        upload["id"],
        clip["id"],
    ]
    assert slack_api.downloads == [(upload["id"], BOT_TOKEN), (clip["id"], BOT_TOKEN)]
    sent = groq_server.audio_requests
    assert [r.data for r in sent] == [
        slack_api.file_data[upload["id"]],
        slack_api.file_data[clip["id"]],
    ]
    assert [r.data for r in sent] == [first.data, second.data]
    assert [r.filename for r in sent] == ["loan question.webm", "audio_message.webm"]

    # The transcripts are the messages' texts; what Slack said of each file is kept with them.
    rows = await inbound(runtime)
    assert [r.text for r in rows] == [ASK, EMI_HEARD]
    audio = rows[1].meta["audio"]
    assert audio["kind"] == "audio" and audio["file_id"] == clip["id"]
    assert audio["mime"] == "audio/webm" and audio["size"] == len(second.data)
    assert audio["duration"] == seconds
    assert audio["transcript"] == EMI_HEARD


async def test_a_mention_with_an_m4a_clip_is_heard_in_its_thread(
    slack: SlackClient,
    channel: SlackChannel,
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
    runtime: Runtime,
) -> None:
    first, second = speak(ASK, fmt="m4a"), speak(EMI_SAID, fmt="m4a")
    groq_server.hear(heard(ASK), heard(EMI_HEARD))
    question = slack_api.add_file(first.data, "Recording.m4a", "audio/x-m4a")
    body = shared("event_app_mention.json", question, text="<@U0BOT12345>")
    thread = body["event"]["ts"]
    assert (await slack.event(body)).status_code == 200
    await channel.idle()
    [asked] = [p for p in slack_api.posts() if p.get("channel") == ROOM]
    assert asked["thread_ts"] == thread and fee_answered(runtime, asked["text"])

    # The answer, a phone recording in the thread (no mention needed there any more).
    answer = slack_api.add_file(second.data, "Recording 2.m4a", "audio/mp4")
    follow = shared("event_message_in_thread.json", answer, channel=ROOM, thread_ts=thread)
    assert (await slack.event(follow)).status_code == 200
    await channel.idle()
    reply = replies(slack_api, ROOM)[-1]
    assert f"*EMI: {expected_emi()} per month*" in reply

    sent = groq_server.audio_requests
    assert [r.data for r in sent] == [first.data, second.data]
    assert [r.data for r in sent] == [slack_api.file_data[f["id"]] for f in (question, answer)]
    assert [r.filename for r in sent] == ["Recording.m4a", "Recording 2.m4a"]
    assert [r.text for r in await inbound(runtime)] == [ASK, EMI_HEARD]


async def test_a_file_over_25_mb_is_answered_without_a_download(
    slack: SlackClient,
    channel: SlackChannel,
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
    runtime: Runtime,
) -> None:
    speech = speak(ASK, fmt="webm")
    big = slack_api.add_file(speech.data, "long.webm", "audio/webm", size=26 * 1024 * 1024)
    await slack.event(shared("event_message_im.json", big))
    await channel.idle()
    assert "too large for me (26.0 MB; the limit is 25 MB)" in replies(slack_api, DM)[-1]
    assert slack_api.calls_to("files.info") == [] and slack_api.downloads == []
    assert groq_server.audio_requests == []
    [row] = await inbound(runtime)
    assert row.meta["audio"]["file_id"] == big["id"] and "transcript" not in row.meta["audio"]


async def test_files_info_failing_gets_a_polite_answer_and_nothing_is_lost(
    slack: SlackClient,
    channel: SlackChannel,
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
    runtime: Runtime,
) -> None:
    speech = speak(ASK, fmt="webm")
    groq_server.hear(heard(ASK))
    # Slack is down for files.info (503), then the file is gone (file_not_found).
    slack_api.outage("files.info")
    first = slack_api.add_file(speech.data, "q.webm", "audio/webm")
    await slack.event(shared("event_message_im.json", first))
    await channel.idle()
    assert "couldn't listen to your voice note just now" in replies(slack_api, DM)[-1]
    slack_api.fail("files.info", "file_not_found")
    gone = slack_api.add_file(speech.data, "gone.webm", "audio/webm")
    await slack.event(shared("event_message_im.json", gone))
    await channel.idle()
    assert "couldn't listen to your voice note just now" in replies(slack_api, DM)[-1]
    assert slack_api.downloads == [] and groq_server.audio_requests == []

    # Both messages are kept with their audio references, to be heard later.
    rows = await inbound(runtime)
    assert [r.meta["audio"]["file_id"] for r in rows] == [first["id"], gone["id"]]
    assert all("transcript" not in r.meta["audio"] for r in rows)
    # Slack is back: the next clip is heard and the conversation goes on.
    again = slack_api.add_file(speech.data, "again.webm", "audio/webm")
    await slack.event(shared("event_message_im.json", again))
    await channel.idle()
    assert fee_answered(runtime, replies(slack_api, DM)[-1])
    assert groq_server.audio_requests[-1].data == speech.data


async def test_a_download_without_the_token_is_not_taken_for_audio(
    channel: SlackChannel, slack_api: SlackStandIn
) -> None:
    """The stand-in serves Slack's sign-in page to any other token, as Slack does."""
    from core.voice import VoiceError

    speech = speak(ASK, fmt="webm")
    file = slack_api.add_file(speech.data, "q.webm", "audio/webm")
    clip = await channel.fetch_audio({"file_id": file["id"], "mime": "audio/webm"})
    assert clip.data == speech.data and clip.filename == "q.webm"
    slack_api.bot_token = "xoxb-some-other-workspace"
    with pytest.raises(VoiceError) as refused:
        await channel.fetch_audio({"file_id": file["id"]})
    assert refused.value.reason == "unavailable"
    assert slack_api.downloads[-1] == (file["id"], BOT_TOKEN)


# -- a rep's voice clip in a lead card's thread ---------------------------------------------------

CUSTOMER = 5101


async def _claimed(desk: Desk) -> str:
    for words in QUALIFY:
        await desk.customer(CUSTOMER, words)
    card = str(desk.cards()[-1]["ts"])
    handoff = str(await desk.scalar("SELECT max(id) FROM handoffs"))
    await desk.click(REP_A, "esoteric_handoff_claim", handoff, card)
    assert f"{REP_A_NAME}, one of our loan advisors" in desk.telegram_texts(CUSTOMER)[-1]
    return card


async def _rep_clip(desk: Desk, card: str, file: dict[str, Any], text: str = "") -> None:
    serial = next(_serial)
    body = shared(
        "event_message_in_thread.json",
        file,
        text=text,
        channel=SALES,
        user=REP_A,
        thread_ts=card,
        parent_user_id="U0BOT12345",
    )
    body["event_id"] = f"EvREPCLIP{serial:06d}"
    raw = json.dumps(body).encode()
    response = await desk.http.post(
        "/slack/events", content=raw, headers={"Content-Type": "application/json", **sign(raw)}
    )
    assert response.status_code == 200
    await desk.slack.idle()


@pytest.fixture
def desk_settings(groq_server: GroqStandIn) -> dict[str, Any]:
    return groq(groq_server)


async def test_a_reps_voice_clip_reaches_the_customer_as_its_transcript(
    tmp_path: Path,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
    desk_settings: dict[str, Any],
) -> None:
    said = "Yes, prepayment is free on floating rate loans."
    speech = speak(said, fmt="webm")
    async with running_desk(tmp_path, telegram_api, slack_api, **desk_settings) as desk:
        # The composition root hands the runtime's transcriber to the channel.
        assert desk.slack.transcriber is desk.runtime.transcriber is not None
        card = await _claimed(desk)
        clip = slack_api.add_file(
            speech.data, "audio_message", "audio/webm", user=REP_A, subtype="slack_audio"
        )
        groq_server.hear(heard(said))
        await _rep_clip(desk, card, clip)
        assert desk.telegram_texts(CUSTOMER)[-1] == f"{REP_A_NAME}: (voice note) {said}"
        assert groq_server.audio_requests[-1].data == speech.data
        assert groq_server.audio_requests[-1].filename == "audio_message.webm"
        assert desk.ephemerals(REP_A)[-1] == f"Sent to the customer as: (voice note) {said}"
        stored = await desk.rows(
            "SELECT author, text FROM messages WHERE direction = 'out' ORDER BY id DESC LIMIT 1"
        )
        assert stored[0].author == f"human:{REP_A}"
        assert stored[0].text == f"**{REP_A_NAME}:** (voice note) {said}"

        # The API fails (every retry): the rep is told, and the customer gets nothing.
        before = desk.telegram_texts(CUSTOMER)
        groq_server.hear(audio_error(500), audio_error(500), audio_error(500))
        await _rep_clip(desk, card, slack_api.add_file(speech.data, "b.webm", "audio/webm"))
        assert desk.ephemerals(REP_A)[-1].startswith("Sorry, I couldn't transcribe that voice")
        assert desk.telegram_texts(CUSTOMER) == before

        # Too large: refused before any download.
        downloads = len(slack_api.downloads)
        big = slack_api.add_file(speech.data, "c.webm", "audio/webm", size=30 * 1024 * 1024)
        await _rep_clip(desk, card, big)
        assert "too large to transcribe (30.0 MB; the limit is 25 MB)" in desk.ephemerals(REP_A)[-1]
        assert len(slack_api.downloads) == downloads

        # Without a transcriber: the rep is told, nothing is fetched or sent.
        desk.slack.transcriber = None
        heard_before = len(groq_server.audio_requests)
        await _rep_clip(desk, card, slack_api.add_file(speech.data, "d.webm", "audio/webm"))
        assert desk.ephemerals(REP_A)[-1].startswith("Voice clips can't be transcribed here")
        assert len(groq_server.audio_requests) == heard_before
        assert desk.telegram_texts(CUSTOMER) == before
