"""The channel's own duties against the stand-in: long replies, streaming, typing, retries, and
updates that carry nothing for the core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from adapters.telegram import TelegramChannel, TelegramConfig
from adapters.telegram.channel import APOLOGY, STALE_BUTTON
from adapters.telegram.delivery import RetryPolicy
from adapters.telegram.render import to_plain
from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.conversation import ConversationService
from core.errors import ChannelError, ConfigError
from core.messages import Choice, Reply, Target
from tests.adapters.telegram.conftest import TelegramBot, eventually, running_bot
from tests.support.telegram_server import (
    TelegramServer,
    callback_update,
    message_update,
    payload,
    utf16_len,
)

ASHA = 123456789
TARGET = Target("telegram", str(ASHA))


class WrittenReply:
    """A reply as an agent writes it: deltas, then the authoritative final reply."""

    def __init__(self, deltas: list[str], final: Reply, pauses: list[float] | None = None) -> None:
        self.deltas = deltas
        self._final = final
        self.pauses = pauses or [0.0] * len(deltas)  # seconds before each delta

    def __aiter__(self) -> AsyncIterator[str]:
        return self._write()

    async def _write(self) -> AsyncIterator[str]:
        for delta, pause in zip(self.deltas, self.pauses, strict=True):
            await asyncio.sleep(pause)
            yield delta

    async def final(self) -> Reply:
        return self._final


@pytest.fixture
async def tg(server: TelegramServer, tmp_path: Path) -> AsyncIterator[TelegramBot]:
    # No hold before the first message: these replies are written at once, and the tests are
    # about previews and edits.
    async with running_bot(
        server,
        tmp_path,
        edit_interval=0.0,
        first_send_hold=0.0,
        retry=RetryPolicy(base_delay=0.01),
    ) as running:
        yield running


def squash(text: str) -> str:
    return "".join(text.split())


async def test_a_long_reply_is_split_with_nothing_lost(tg: TelegramBot) -> None:
    paragraphs = [f"**Part {n}.** " + f"Sentence {n} about EMIs & fees. " * 60 for n in range(8)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 3 * 4096
    await tg.channel.send(TARGET, Reply(text, choices=(Choice("Yes", "yes"),)))

    calls = tg.server.calls_to("sendMessage", ASHA, ok=None)
    assert len(calls) >= 4 and all(c.status == 200 for c in calls)
    shown = tg.server.visible(ASHA)
    assert all(utf16_len(s) <= 4096 for s in shown)
    assert squash("".join(shown)) == squash(to_plain(text))
    assert [("reply_markup" in c.params) for c in calls] == [False] * (len(calls) - 1) + [True]


async def test_streaming_sends_then_edits_and_ends_exactly_final(tg: TelegramBot) -> None:
    final = Reply("Your **EMI** is ₹21,696 a month.", choices=(Choice("Yes", "yes"),))
    written = WrittenReply(["Your ", "EMI is ", "about ", "₹21,696"], final)
    await tg.channel.stream(TARGET, written)

    assert len(tg.server.calls_to("sendMessage", ASHA)) == 1
    edits = tg.server.calls_to("editMessageText", ASHA)
    assert len(edits) >= 2
    assert tg.server.visible(ASHA) == ["Your EMI is ₹21,696 a month."]
    assert edits[-1].params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "yes"


async def test_streaming_edits_are_paced_per_chat(server: TelegramServer, tmp_path: Path) -> None:
    # With an hour between edits, only the first send and the final edit can happen.
    async with running_bot(server, tmp_path, edit_interval=3600.0, first_send_hold=0.0) as tg:
        final = Reply("one two three four five six")
        await tg.channel.stream(TARGET, WrittenReply(final.text.split(" "), final))
        assert len(server.calls_to("sendMessage", ASHA)) == 1
        assert len(server.calls_to("editMessageText", ASHA)) == 1
        assert server.visible(ASHA) == [final.text]


async def test_a_reply_written_within_the_hold_goes_out_once_without_edits(
    server: TelegramServer, tmp_path: Path
) -> None:
    async with running_bot(server, tmp_path) as tg:  # the default hold
        final = Reply("Your **EMI** is ₹21,696 a month.", choices=(Choice("Yes", "yes"),))
        await tg.channel.stream(TARGET, WrittenReply(["Your ", "EMI is ", "₹21,696"], final))
        (sent,) = server.calls_to("sendMessage", ASHA)
        assert server.calls_to("editMessageText", ASHA) == []
        assert server.visible(ASHA) == ["Your EMI is ₹21,696 a month."]
        assert sent.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "yes"


async def test_a_reply_still_written_when_the_hold_ends_shows_its_first_words(
    server: TelegramServer, tmp_path: Path
) -> None:
    async with running_bot(server, tmp_path, first_send_hold=0.1, edit_interval=0.0) as tg:
        final = Reply("First sentence. Second one.")
        written = WrittenReply(["First sentence. ", "Second one."], final, pauses=[0.0, 0.6])
        await tg.channel.stream(TARGET, written)
        (preview,) = server.calls_to("sendMessage", ASHA)
        assert preview.text == "First sentence."  # sent when the hold ended, not at the end
        assert len(server.calls_to("editMessageText", ASHA)) >= 1
        assert server.visible(ASHA) == [final.text]


async def test_a_preview_showing_the_whole_reply_is_not_edited_again(
    server: TelegramServer, tmp_path: Path
) -> None:
    async with running_bot(server, tmp_path, first_send_hold=0.0, edit_interval=3600.0) as tg:
        final = Reply("All of it at once.")
        await tg.channel.stream(TARGET, WrittenReply([final.text], final))
        assert len(server.calls_to("sendMessage", ASHA)) == 1
        assert server.calls_to("editMessageText", ASHA, ok=None) == []
        assert server.visible(ASHA) == [final.text]


async def test_streaming_a_final_longer_than_one_message(tg: TelegramBot) -> None:
    text = "\n\n".join(f"Paragraph {n}. " + "More words here. " * 100 for n in range(6))
    final = Reply(text)
    await tg.channel.stream(
        TARGET, WrittenReply([text[i : i + 500] for i in range(0, 9000, 500)], final)
    )
    shown = tg.server.visible(ASHA)
    assert len(shown) >= 3
    assert squash("".join(shown)) == squash(text)


async def test_streaming_a_reply_that_asks_for_the_contact(tg: TelegramBot) -> None:
    final = Reply("What is your mobile number?", request_contact=True)
    await tg.channel.stream(TARGET, WrittenReply(["What is ", "your mobile"], final))
    assert tg.server.visible(ASHA) == [final.text]
    last = tg.server.calls_to("sendMessage", ASHA)[-1]
    assert last.params["reply_markup"]["keyboard"][0][0]["request_contact"] is True


async def test_typing_shows_until_the_reply(server: TelegramServer, tmp_path: Path) -> None:
    async with running_bot(server, tmp_path, typing_grace=0.0, typing_refresh=0.01) as tg:
        await tg.channel.typing(TARGET)
        await server.wait_for(lambda s: len(s.calls_to("sendChatAction", ASHA)) >= 2)
        assert server.calls_to("sendChatAction", ASHA)[0].params["action"] == "typing"
        await tg.channel.send(TARGET, Reply("Done."))
        assert tg.channel.typing_chats == frozenset()


async def test_network_errors_are_retried(tg: TelegramBot) -> None:
    tg.server.fail("sendMessage", 502, "Bad Gateway", times=2)
    await tg.channel.send(TARGET, Reply("Hello"))
    assert [c.status for c in tg.server.calls_to("sendMessage", ASHA, ok=None)] == [502, 502, 200]


async def test_network_errors_beyond_the_budget_raise(tg: TelegramBot) -> None:
    tg.server.fail("sendMessage", 502, "Bad Gateway", times=10)
    with pytest.raises(ChannelError, match="Bad Gateway"):
        await tg.channel.send(TARGET, Reply("Hello"))
    assert len(tg.server.calls_to("sendMessage", ASHA, ok=None)) == 5  # first try + 4 retries


async def test_an_expired_button_is_answered_and_not_stored(tg: TelegramBot) -> None:
    await tg.push(callback_update(tg.next_id(), ASHA, "~unknownkey", query_id="q-old"))
    await tg.server.wait_for(lambda s: bool(s.calls_to("answerCallbackQuery")))
    (answer,) = tg.server.calls_to("answerCallbackQuery")
    assert answer.params["text"] == STALE_BUTTON
    await tg.idle()
    assert await tg.scalar("SELECT count(*) FROM messages") == 0


async def test_an_edit_is_answered_as_a_new_message(tg: TelegramBot) -> None:
    await tg.say(ASHA, "hi")
    original = message_update(tg.next_id(), ASHA, "I need a home lon")
    await tg.exchange(ASHA, original)
    edited = message_update(
        tg.next_id(),
        ASHA,
        "I need a home loan",
        kind="edited_message",
        message_id=original["message"]["message_id"],
    )
    reply = await tg.exchange(ASHA, edited)
    assert "How much would you like to borrow?" in reply.text


async def test_unusual_updates_do_not_crash_the_bot(tg: TelegramBot) -> None:
    for odd in (
        {"update_id": tg.next_id()},
        {"update_id": tg.next_id(), "channel_post": payload("update_private_text.json")["message"]},
        {
            "update_id": tg.next_id(),
            "poll": {
                "id": "1",
                "question": "?",
                "options": [],
                "total_voter_count": 0,
                "is_closed": False,
                "is_anonymous": True,
                "type": "regular",
                "allows_multiple_answers": False,
            },
        },
        message_update(tg.next_id(), ASHA, None, new_chat_title="x"),
    ):
        await tg.push(odd)
    reply = await tg.say(ASHA, "hi")
    assert "Which loan" in reply.text
    assert len(tg.server.texts(ASHA)) == 1


async def test_blocking_the_bot_closes_the_conversation(tg: TelegramBot) -> None:
    await tg.say(ASHA, "hi")
    kicked = {
        "update_id": tg.next_id(),
        "my_chat_member": {
            "chat": {"id": ASHA, "type": "private", "first_name": "Asha"},
            "from": {"id": ASHA, "is_bot": False, "first_name": "Asha"},
            "date": 1767225700,
            "old_chat_member": {"user": payload("resp_getMe.json")["result"], "status": "member"},
            "new_chat_member": {
                "user": payload("resp_getMe.json")["result"],
                "status": "kicked",
                "until_date": 0,
            },
        },
    }
    await tg.push(kicked)

    async def closed() -> bool:
        return await tg.scalar("SELECT close_reason FROM conversations") == "blocked"

    await eventually(closed)


async def test_a_failing_turn_gets_a_polite_answer(tg: TelegramBot) -> None:
    await tg.say(ASHA, "hi")
    async with tg.db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE leads"))
        await conn.execute(text("DROP TABLE messages"))
    reply = await tg.say(ASHA, "I need a home loan")
    assert reply.text in (
        APOLOGY,
        "Sorry, I'm having trouble right now. Please try again in a minute.",
    )


async def test_a_rejected_token_is_a_config_error(
    server: TelegramServer, sqlite_database: Any
) -> None:

    scripted = ScriptedAgent(load_catalogue())
    service = ConversationService(sqlite_database, scripted, scripted)
    channel = TelegramChannel(service, TelegramConfig("123:not-a-token", api_url=server.base_url))
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        await channel.start()
    assert await channel.check() == (False, "not started")


async def test_an_unreachable_api_is_a_channel_error(sqlite_database: Any) -> None:

    async with TelegramServer() as gone:
        url = gone.base_url
    scripted = ScriptedAgent(load_catalogue())
    service = ConversationService(sqlite_database, scripted, scripted)
    channel = TelegramChannel(service, TelegramConfig("1:abc", api_url=url))
    with pytest.raises(ChannelError, match="could not reach"):
        await channel.start()
