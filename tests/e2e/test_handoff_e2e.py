"""From a Telegram customer to a Slack sales rep and back, across both stand-in servers, with
the real python-telegram-bot, slack-bolt and groq clients and the composition root's wiring."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.desk import (
    QUALIFY,
    REP_A,
    REP_A_NAME,
    REP_B,
    REP_B_NAME,
    Desk,
    running_desk,
)
from tests.support.groq_server import GroqStandIn, text
from tests.support.slack_server import SlackStandIn
from tests.support.telegram_server import TelegramServer, message_update

CUSTOMER = 5001


def llm_settings(groq_server: GroqStandIn) -> dict[str, Any]:
    # The LLM answers 500 until a test scripts it: the offline agent answers meanwhile (the
    # fallback every LLM failure takes), which keeps the qualifying flow exact.
    return {
        "GROQ_API_KEY": "gsk_FakeKeyForLocalTestsOnly",
        "GROQ_BASE_URL": groq_server.base_url,
        "llm_max_retries": 0,
        "llm_breaker_failures": 100,
        "llm_turn_deadline_seconds": 5.0,
    }


async def qualify(desk: Desk, chat_id: int = CUSTOMER) -> str:
    """The customer qualifies and leaves a lead; returns the lead card's ts."""
    cards_before = len(desk.cards())
    for words in QUALIFY:
        await desk.customer(chat_id, words)
    cards = desk.cards()
    assert len(cards) == cards_before + 1
    return str(cards[-1]["ts"])


async def test_customer_to_rep_and_back(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn, groq_server: GroqStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api, **llm_settings(groq_server)) as desk:
        card = await qualify(desk)

        # The lead card: who, the loan, its figures and a Claim button.
        shown = desk.card_text(card)
        for fact in ("Ravi Kumar", "Home Loan", "₹50,00,000", "240 months", "₹43,391"):
            assert fact in shown
        assert "eligible on first check" in shown and "Claim" in shown
        assert "+919876543210" in shown
        lead_id = await desk.scalar("SELECT id FROM leads")
        assert f"lead #{lead_id}" in shown

        # A rep claims it: the conversation is theirs and the customer hears their name.
        await desk.click(REP_A, "esoteric_handoff_claim", await _handoff_id(desk), card)
        conversation = (
            await desk.rows(
                "SELECT id, status, assigned_to FROM conversations WHERE chat_key=:c",
                c=str(CUSTOMER),
            )
        )[0]
        assert (conversation.status, conversation.assigned_to) == ("handoff", REP_A)
        assert f"{REP_A_NAME}, one of our loan advisors" in desk.telegram_texts(CUSTOMER)[-1]
        assert "Claimed by" in desk.card_text(card) and "Release" in desk.card_text(card)
        llm_calls = len(groq_server.requests)

        # Three messages each way. The customer's go to the card's thread, the rep's (sent
        # back to back, without waiting) to Telegram, each in order.
        customer_says = ["Hi Asha, is prepayment allowed?", "And can I add my wife?", "Ok!"]
        rep_says = [
            "Yes, prepayment is free on floating rates.",
            "Yes, a co-applicant raises your eligibility.",
            "I'll send the forms today.",
        ]
        for words in customer_says:
            await desk.customer(CUSTOMER, words)
        for words in rep_says:
            await desk.rep_says(REP_A, card, words, wait=False)
        await desk.slack.idle()
        thread = desk.thread(card)
        relayed = [t for t in thread if t.startswith("*Ravi:*")]
        assert relayed == [f"*Ravi:* {w}" for w in customer_says]
        delivered = desk.telegram_texts(CUSTOMER)[-3:]
        assert delivered == [f"{REP_A_NAME}: {w}" for w in rep_says]
        # The bot said nothing and the LLM was not asked while the rep had the conversation.
        assert len(groq_server.requests) == llm_calls
        stored = await desk.rows(
            "SELECT direction, author, text, status FROM messages WHERE conversation_id = :c "
            "ORDER BY id DESC LIMIT 6",
            c=conversation.id,
        )
        assert [(r.direction, r.status) for r in reversed(stored)] == [("in", "ignored")] * 3 + [
            ("out", "sent")
        ] * 3
        assert {r.author for r in stored if r.direction == "out"} == {f"human:{REP_A}"}

        # The rep releases it; the bot answers the next message with the human part in context.
        await desk.click(REP_A, "esoteric_handoff_release", await _handoff_id(desk), card)
        assert (
            await desk.scalar("SELECT status FROM conversations WHERE id = :c", c=conversation.id)
            == "active"
        )
        assert "I'm back to help" in desk.telegram_texts(CUSTOMER)[-1]
        groq_server.script(text("As Asha said, prepayment is free on floating-rate loans."))
        await desk.customer(CUSTOMER, "Sorry, what did Asha say about prepayment?")
        assert desk.telegram_texts(CUSTOMER)[-1] == (
            "As Asha said, prepayment is free on floating-rate loans."
        )
        prompt = "\n".join(str(m.get("content")) for m in groq_server.requests[-1].messages)
        for words in rep_says:
            assert f"(a human advisor wrote) **{REP_A_NAME}:** {words}" in prompt
        for words in customer_says:
            assert words in prompt
        assert await desk.audit(f"slack:{REP_A}") == [
            ("handoff_claim", "ok"),
            ("handoff_release", "ok"),
        ]


async def _handoff_id(desk: Desk) -> str:
    return str(await desk.scalar("SELECT max(id) FROM handoffs"))


async def test_two_reps_claim_at_once(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        await desk.customer(CUSTOMER, "/human")
        card = desk.cards()[-1]["ts"]
        handoff = await _handoff_id(desk)
        clicks = [
            desk.click_payload(rep, "esoteric_handoff_claim", handoff, card)
            for rep in (REP_A, REP_B)
        ]
        await asyncio.gather(
            *(desk._post(body, "application/x-www-form-urlencoded") for body in clicks)
        )
        await desk.slack.idle()
        row = (await desk.rows("SELECT status, assigned_to FROM handoffs"))[0]
        assert row.status == "claimed" and row.assigned_to in (REP_A, REP_B)
        loser, winner_name = (
            (REP_B, REP_A_NAME) if row.assigned_to == REP_A else (REP_A, REP_B_NAME)
        )
        winner = row.assigned_to
        # The loser is told who has it; the customer hears one advisor's name, once.
        assert desk.ephemerals(loser) == [f"{winner_name} already has this conversation."]
        joined = [t for t in desk.telegram_texts(CUSTOMER) if "has joined" in t]
        assert joined == [
            f"{winner_name}, one of our loan advisors, has joined and will reply here shortly."
        ]
        assert await desk.audit(f"slack:{winner}") == [("handoff_claim", "ok")]
        assert await desk.audit(f"slack:{loser}") == [("handoff_claim", "refused")]
        # A message from the loser in the thread does not reach the customer.
        before = len(desk.telegram_texts(CUSTOMER))
        await desk.rep_says(loser, card, "I can take this one too")
        assert len(desk.telegram_texts(CUSTOMER)) == before
        assert desk.ephemerals(loser)[-1] == (
            f"{winner_name} has this conversation: your message was not sent to the customer."
        )


class Clock:
    """The handoff timers' clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


async def test_restart_in_the_middle_of_a_handoff(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    clock = Clock()
    waiting_customer = 5002
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        assert desk.runtime.handoffs is not None
        desk.runtime.handoffs.clock = clock
        card = await qualify(desk)
        claimed_id = await _handoff_id(desk)
        await desk.click(REP_A, "esoteric_handoff_claim", claimed_id, card)
        await desk.customer(waiting_customer, "/human", name="Nisha")
        waiting_card = str(desk.cards()[-1]["ts"])
        waiting_id = await _handoff_id(desk)
        await desk.customer(CUSTOMER, "Before the restart")
        await desk.rep_says(REP_A, card, "Noted, one moment")
        clock.advance(4)

    # The bot is down; the customer writes anyway. Telegram keeps the update until polled.
    update_id = telegram_api.next_update_id()
    update = message_update(update_id, CUSTOMER, "Are you still there?")
    update["message"]["from"]["first_name"] = "Ravi"
    await telegram_api.push(update)

    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        handoffs = desk.runtime.handoffs
        assert handoffs is not None
        handoffs.clock = clock
        await desk.turn_done(update_id)
        # Nothing lost, assignment kept: the message went to the rep's thread, not the bot.
        row = (
            await desk.rows("SELECT status, assigned_to FROM handoffs WHERE id=:i", i=claimed_id)
        )[0]
        assert (row.status, row.assigned_to) == ("claimed", REP_A)
        assert desk.thread(card)[-1] == "*Ravi:* Are you still there?"
        assert desk.telegram_texts(CUSTOMER)[-1] == f"{REP_A_NAME}: Noted, one moment"
        await desk.rep_says(REP_A, card, "Yes, still here")
        assert desk.telegram_texts(CUSTOMER)[-1] == f"{REP_A_NAME}: Yes, still here"

        # The unclaimed handoff's SLA timer, set before the restart, fires once.
        clock.advance(7)  # 11 minutes after the request; the SLA is 10
        report = await handoffs.tick()
        assert (report.reminded, report.returned) == (1, 0)
        assert (await handoffs.tick()).reminded == 0
        await desk.runtime.service.idle()  # the customer's notice goes out in the chat's turn
        reminder = [
            c.params
            for c in slack_api.calls_to("chat.postMessage")
            if c.params.get("thread_ts") == waiting_card and "Reminder" in c.params["text"]
        ]
        assert len(reminder) == 1 and str(reminder[0]["reply_broadcast"]).lower() == "true"
        assert "expected wait is about 10 more minutes" in desk.telegram_texts(waiting_customer)[-1]

        # The claimed handoff goes back to the bot once idle past its limit (30 minutes).
        clock.advance(31)
        report = await handoffs.tick()
        assert report.returned == 1
        await desk.runtime.service.idle()
        assert (
            await desk.scalar("SELECT status FROM handoffs WHERE id=:i", i=claimed_id) == "returned"
        )
        assert (
            await desk.scalar(
                "SELECT status FROM conversations WHERE chat_key=:c AND status != 'closed'",
                c=str(CUSTOMER),
            )
            == "active"
        )
        assert "back to help" in desk.telegram_texts(CUSTOMER)[-1]
        assert "No messages for 30 minutes" in desk.thread(card)[-1]
        # The reminder was for the waiting one only; it is still waiting.
        assert (
            await desk.scalar("SELECT status FROM handoffs WHERE id=:i", i=waiting_id) == "waiting"
        )
        await desk.customer(CUSTOMER, "/help")
        assert "I'm Esoteric" in desk.telegram_texts(CUSTOMER)[-1]


async def test_release_with_the_slash_command(
    tmp_path: Path, telegram_api: TelegramServer, slack_api: SlackStandIn
) -> None:
    async with running_desk(tmp_path, telegram_api, slack_api) as desk:
        await desk.customer(CUSTOMER, "/human")
        card = str(desk.cards()[-1]["ts"])
        handoff = await _handoff_id(desk)
        assert "/esoteric release [ID]" in await desk.slash(REP_A, "help")
        assert await desk.slash(REP_A, "release") == "You have no conversation to release."
        await desk.click(REP_A, "esoteric_handoff_claim", handoff, card)
        # A question for the bot in the card's thread is not sent to the customer.
        before = len(desk.telegram_texts(CUSTOMER))
        await desk.rep_says(REP_A, card, "<@U0BOT12345> what is the home loan rate?")
        assert len(desk.telegram_texts(CUSTOMER)) == before
        assert await desk.slash(REP_B, f"release {handoff}") == (
            f"{REP_A_NAME} has this conversation, not you."
        )
        assert await desk.slash(REP_A, "release") == (
            f"Released handoff #{handoff}; the bot answers again."
        )
        assert await desk.scalar("SELECT status FROM handoffs") == "released"
        await desk.customer(CUSTOMER, "/help")
        assert "I'm Esoteric" in desk.telegram_texts(CUSTOMER)[-1]
        assert await desk.audit(f"slack:{REP_A}") == [
            ("handoff_release", "refused"),
            ("handoff_claim", "ok"),
            ("handoff_release", "ok"),
        ]
        assert await desk.audit(f"slack:{REP_B}") == [("handoff_release", "refused")]
