"""Rendering to Slack and reading Slack events, as pure functions."""

from __future__ import annotations

import hashlib
import hmac
import time

from hypothesis import given
from hypothesis import strategies as st

from adapters.slack.channel import signature_ok
from adapters.slack.events import BotIdentity, clean_text, from_person, to_inbound
from adapters.slack.render import (
    MAX_ACTIONS,
    MAX_BLOCKS,
    SECTION_LIMIT,
    escape,
    lead_card,
    preview,
    render,
    split_text,
    to_mrkdwn,
)
from core.handoff import LeadCard
from core.messages import Choice, Reply
from tests.support.slack_server import sample

BOT = BotIdentity("U0BOT12345", "B0BOT67890")


def test_mrkdwn_escapes_control_characters_and_converts_bold_and_lists() -> None:
    assert escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert to_mrkdwn("**EMI: ₹10,747** <now>\n- one & two\n- three") == (
        "*EMI: ₹10,747* &lt;now&gt;\n• one &amp; two\n• three"
    )
    # Already-escaped looking text is escaped again: the rep sees exactly what was written.
    assert to_mrkdwn("&amp;") == "&amp;amp;"


@given(st.text(alphabet=st.sampled_from(list("ab &<>\n")), max_size=400), st.integers(8, 60))
def test_split_keeps_every_character_and_every_entity(text: str, limit: int) -> None:
    escaped = escape(text)
    pieces = split_text(escaped, limit)
    assert "".join(pieces) == escaped
    assert all(len(p) <= limit for p in pieces)
    for piece in pieces:
        # No piece ends in the middle of an entity: unescaping piecewise equals the whole.
        assert not any(piece.endswith(e[:i]) for e in ("&amp;", "&lt;", "&gt;") for i in (1, 2, 3))
    assert (
        "".join(p.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") for p in pieces)
        == text
    )


def test_split_prefers_paragraphs_then_lines_then_spaces() -> None:
    text = "a" * 50 + "\n\n" + "b" * 30 + "\n" + "c" * 30
    assert split_text(text, 90) == ["a" * 50 + "\n\n", "b" * 30 + "\n" + "c" * 30]


def test_render_respects_block_and_button_limits() -> None:
    choices = tuple(Choice(f"Option {i} " + "x" * 100, str(i)) for i in range(30))
    messages = render(Reply("x " * 100_000, choices=choices))
    assert len(messages) > 1
    for message in messages:
        assert len(message.blocks) <= MAX_BLOCKS
        assert len(message.text) <= SECTION_LIMIT
        for block in message.blocks:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= SECTION_LIMIT
            if block["type"] == "actions":
                assert len(block["elements"]) <= MAX_ACTIONS
                assert all(len(e["text"]["text"]) <= 75 for e in block["elements"])
    buttons = [
        e for m in messages for b in m.blocks if b["type"] == "actions" for e in b["elements"]
    ]
    assert [b["value"] for b in buttons] == [str(i) for i in range(30)]
    assert len({b["action_id"] for b in buttons}) == 30


def test_empty_reply_still_renders_a_valid_message() -> None:
    [message] = render(Reply("   "))
    assert message.blocks[0]["text"]["text"].strip()


def test_preview_of_a_long_draft_is_cut_to_one_section() -> None:
    message = preview("word " * 2000)
    assert len(message.blocks) == 1 and len(message.blocks[0]["text"]["text"]) <= SECTION_LIMIT


def test_clean_text_drops_the_bot_mention_and_unescapes() -> None:
    text = "<@U0BOT12345> rates for <@U0OTHER99> &amp; see <https://example.com/a|the page> &lt;3"
    assert clean_text(text, BOT) == "rates for <@U0OTHER99> & see the page <3"


def test_only_people_writing_new_messages_count() -> None:
    im = sample("event_message_im.json")["event"]
    assert from_person(im, BOT)
    assert not from_person(sample("event_message_from_self_bot.json")["event"], BOT)
    assert not from_person({**im, "subtype": "message_changed"}, BOT)
    assert not from_person({**im, "subtype": "message_deleted"}, BOT)
    assert not from_person({**im, "bot_id": "B0SOMEBOT"}, BOT)
    assert not from_person({**im, "user": BOT.user_id}, BOT)
    assert from_person({**im, "subtype": "file_share"}, BOT)


def test_to_inbound_normalises_a_mention() -> None:
    body = sample("event_app_mention.json")
    event = body["event"]
    inbound = to_inbound(event, body["event_id"], event["ts"], BOT, "Asha")
    assert inbound.channel == "slack" and inbound.chat_key == "C0CHANNEL01"
    assert inbound.thread == event["ts"] and inbound.sender_id == "U0HUMAN001"
    assert inbound.event_id == "Ev0AB1CD2EF4" and inbound.text == "what's blocking the deploy?"


def test_signature_scheme() -> None:
    secret, body, now = "s3cret", b'{"type":"event_callback"}', 1_767_225_600
    good = (
        "v0=" + hmac.new(secret.encode(), f"v0:{now}:".encode() + body, hashlib.sha256).hexdigest()
    )
    assert signature_ok(secret, body, str(now), good, now=now)
    assert signature_ok(secret, body, str(now), good, now=now + 300)
    assert not signature_ok(secret, body, str(now), good, now=now + 301)
    assert not signature_ok(secret, body + b" ", str(now), good, now=now)
    assert not signature_ok(secret, body, "", good, now=now)
    assert not signature_ok("", body, str(now), good, now=now)
    assert not signature_ok(secret, body, str(int(time.time())), good)


def test_a_lead_cards_fallback_text_cannot_ping_the_channel() -> None:
    card = LeadCard(
        handoff_id=1,
        status="waiting",
        reason="human",
        customer="<!channel> free money <https://evil.example|click>",
        customer_channel="telegram",
        product="<!here>",
        assigned_to="<!everyone>",
        assigned_name=None,
    )
    message = lead_card(card)
    everything = message.text + str(message.blocks)
    for ping in ("<!channel>", "<!here>", "<!everyone>", "<https://evil.example|click>"):
        assert ping not in everything
    assert "&lt;!channel&gt;" in message.text
