"""Telegram's send budget under a burst of streamed LLM replies: while the budget is saturated,
replies go out once, complete, instead of a preview and its edits (each edit costs a call of the
budget as a message does), so the budget goes to replies. The model here writes a word every
50 ms, so its replies outlast the hold before a first message and would otherwise preview."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.test_handoff_e2e import llm_settings
from tests.support.desk import running_desk
from tests.support.groq_server import GroqStandIn, text
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer, message_update

ANSWER = (
    "A home loan runs up to thirty years. The rate starts at 8.5% a year. "
    "Would you like an estimate of the EMI?"
)


async def burst(desk_chats: list[int], telegram_api: TelegramServer) -> list[int]:
    updates = []
    for chat in desk_chats:
        updates.append(telegram_api.next_update_id())
        await telegram_api.push(message_update(updates[-1], chat, "tell me about home loans"))
    return updates


async def test_a_saturated_budget_sends_replies_whole_without_edits(
    tmp_path: Path,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
) -> None:
    groq_server.default = text(ANSWER, token_delay=0.05)
    chats = [6100 + n for n in range(8)]
    settings = {**llm_settings(groq_server), "telegram_messages_per_second": 2}
    async with running_desk(tmp_path, telegram_api, slack_api, **settings) as desk:
        for update_id in await burst(chats, telegram_api):
            await desk.turn_done(update_id)
        await asyncio.sleep(0)
    sends = telegram_api.calls_to("sendMessage")
    edits = telegram_api.calls_to("editMessageText")
    # Eight replies streaming at 2 sends a second are four seconds of demand: every reply went
    # out once, whole, with no preview to edit.
    assert len(sends) == len(chats)
    assert edits == []
    for chat in chats:
        assert [t.replace("\n", " ") for t in telegram_api.visible(chat)] == [ANSWER]


async def test_with_budget_to_spare_replies_stream_as_previews_and_edits(
    tmp_path: Path,
    telegram_api: TelegramServer,
    slack_api: SlackStandIn,
    groq_server: GroqStandIn,
) -> None:
    groq_server.default = text(ANSWER, token_delay=0.05)
    chats = [6200, 6201]
    async with running_desk(tmp_path, telegram_api, slack_api, **llm_settings(groq_server)) as desk:
        for update_id in await burst(chats, telegram_api):
            await desk.turn_done(update_id)
    assert len(telegram_api.calls_to("sendMessage")) == len(chats)
    assert len(telegram_api.calls_to("editMessageText")) >= len(chats)
    for chat in chats:
        assert [t.replace("\n", " ") for t in telegram_api.visible(chat)] == [ANSWER]
