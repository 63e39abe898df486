"""Replies as Slack messages: mrkdwn with escaping, Block Kit, and splitting within limits.

Slack limits (api.slack.com/reference/block-kit): a section's text is at most 3,000 characters, a
message at most 50 blocks, an actions block at most 25 elements, a button label 75 characters and
its value 2,000. A reply that does not fit becomes several messages; no text is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.handoff import LeadCard
from core.messages import Choice, Citation, Reply

SECTION_LIMIT = 3000
MAX_BLOCKS = 50
MAX_ACTIONS = 25
BUTTON_LABEL_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
# The top-level ``text`` is the notification and accessibility fallback when blocks are sent.
FALLBACK_LIMIT = 3000
DESK_PREFIX = "/esoteric "
ACTION_PATTERN = r"^esoteric_(desk|choice)_\d+$"

_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)
_BULLET = re.compile(r"^(\s*)[-*] ", re.MULTILINE)
_ENTITY_TAIL = re.compile(r"&[a-z]{0,3}$")
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")


def escape(text: str) -> str:
    """Slack's three control characters; everything else is literal in mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def to_mrkdwn(text: str) -> str:
    """The core's markdown subset (``**bold**``, ``- `` lists) as Slack mrkdwn."""
    return _BULLET.sub(r"\1• ", _BOLD.sub(r"*\1*", escape(text)))


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Pieces of at most ``limit`` characters whose concatenation is exactly ``text``. Cuts
    prefer a paragraph break, then a line break, then a space, and never split an entity."""
    if limit < 8:
        raise ValueError("limit too small to keep entities whole")
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = -1
        for separator in ("\n\n", "\n", " "):
            at = window.rfind(separator)
            if at > limit // 4:
                cut = at + len(separator)
                break
        if cut == -1:
            cut = limit
            tail = _ENTITY_TAIL.search(window)
            if tail is not None:
                cut = tail.start()
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    return pieces


@dataclass(frozen=True)
class SlackMessage:
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def _plain(text: str, limit: int) -> dict[str, Any]:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return {"type": "plain_text", "text": text, "emoji": True}


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def sources_line(citations: tuple[Citation, ...]) -> str:
    seen: dict[str, None] = {}
    for c in citations:
        seen[f"{c.source} ({c.heading})" if c.heading else c.source] = None
    return "Sources: " + "; ".join(seen)


def action_id(choice: Choice, index: int) -> str:
    kind = "desk" if choice.value.startswith(DESK_PREFIX) else "choice"
    return f"esoteric_{kind}_{index}"


def _actions(choices: tuple[Choice, ...]) -> list[dict[str, Any]]:
    blocks = []
    for start in range(0, len(choices), MAX_ACTIONS):
        elements = [
            {
                "type": "button",
                "action_id": action_id(choice, start + i),
                "text": _plain(choice.label, BUTTON_LABEL_LIMIT),
                "value": choice.value[:BUTTON_VALUE_LIMIT],
            }
            for i, choice in enumerate(choices[start : start + MAX_ACTIONS])
        ]
        blocks.append(
            {"type": "actions", "block_id": f"esoteric_choices_{start}", "elements": elements}
        )
    return blocks


def _fallback(text: str) -> str:
    return text if len(text) <= FALLBACK_LIMIT else text[: FALLBACK_LIMIT - 1] + "…"


def render(reply: Reply) -> list[SlackMessage]:
    """One or more messages that together show the whole reply; buttons and sources come last."""
    body = [piece for piece in split_text(to_mrkdwn(reply.text)) if piece.strip()]
    blocks = [section(piece) for piece in body]
    if reply.citations:
        for piece in split_text(escape(sources_line(reply.citations))):
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": piece}]})
    if reply.choices:
        blocks.extend(_actions(reply.choices))
    if not blocks:
        # Slack rejects an empty message; an empty reply still says something.
        blocks = [section("(no text)")]
    messages = []
    for start in range(0, len(blocks), MAX_BLOCKS):
        chunk = blocks[start : start + MAX_BLOCKS]
        text = "\n".join(
            b["text"]["text"] if b["type"] == "section" else b["elements"][0].get("text", "")
            for b in chunk
            if b["type"] in ("section", "context")
        )
        messages.append(SlackMessage(_fallback(text or "Choose an option"), chunk))
    return messages


def preview(text: str) -> SlackMessage:
    """A reply still being written: one section, cut below the section limit (marked with an
    ellipsis) until the final reply replaces it."""
    body = to_mrkdwn(text)
    if len(body) > SECTION_LIMIT:
        body = split_text(body, SECTION_LIMIT - 2)[0].rstrip() + " …"
    return SlackMessage(_fallback(body), [section(body)])


# -- lead cards (the sales desk side of a human handoff) -------------------------------------------

HANDOFF_ACTION_PATTERN = r"^esoteric_handoff_(claim|release)$"
# "Send quote PDF" on a card with a lead: its value is the lead's id.
QUOTE_ACTION = "esoteric_quote_pdf"
_RECENT_CHARS = 300  # per message on a card; the thread has the whole conversation
_HEADLINES = {
    "human": "A customer asked for an advisor",
    "lead": "New qualified lead",
}
_STATUS = {
    "waiting": "Waiting for an advisor: the first to press Claim takes the conversation.",
    "claimed": "Claimed by {who}. Reply in this thread to talk to the customer; press Release "
    "(or /esoteric release) to hand it back to the bot.",
    "released": "Released by {who}: Esoteric is answering again.",
    "returned": "Returned to Esoteric after no messages for a while (was with {who}).",
}


def lead_card(card: LeadCard) -> SlackMessage:
    """A lead card: who, the loan, the latest messages, and a Claim or Release button."""
    # The claiming rep as a mention when the id is a Slack user id (it comes from Slack);
    # anything else is shown, escaped, as text.
    if card.assigned_to and _USER_ID.fullmatch(card.assigned_to):
        who = f"<@{card.assigned_to}>"
    else:
        who = escape(card.assigned_name or card.assigned_to or "-")
    headline = _HEADLINES.get(card.reason, "Handoff")
    summary = f"*{escape(card.customer)}* on {escape(card.customer_channel.title())}"
    if card.phone:
        summary += f" · {escape(card.phone)}"
    if card.lead_id is not None:
        summary += f" · lead #{card.lead_id}"
    facts = [
        ("Product", card.product),
        ("Amount", card.amount),
        ("Tenure", card.tenure),
        ("EMI", card.emi),
        ("Eligibility", card.eligibility),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"{headline} (#{card.handoff_id})", 150)},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": summary[:SECTION_LIMIT]},
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{escape(value or '-')}"[:2000]}
                for name, value in facts
            ],
        },
    ]
    if card.recent:
        lines = []
        for speaker, text in card.recent:
            if len(text) > _RECENT_CHARS:
                text = text[: _RECENT_CHARS - 1] + "…"
            lines.append(f"*{escape(speaker)}:* {escape(text)}")
        recent = "\n".join(lines)
        blocks.append(section(split_text("_Latest messages_\n" + recent)[0]))
    status = _STATUS.get(card.status, card.status).format(who=who)
    if card.note:
        status += f"\n{escape(card.note)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})
    buttons = []
    button = {
        "waiting": ("Claim", "esoteric_handoff_claim", "primary"),
        "claimed": ("Release", "esoteric_handoff_release", "danger"),
    }.get(card.status)
    if button is not None:
        label, action, style = button
        buttons.append(
            {
                "type": "button",
                "action_id": action,
                "text": _plain(label, BUTTON_LABEL_LIMIT),
                "style": style,
                "value": str(card.handoff_id),
            }
        )
    if card.lead_id is not None and card.amount and card.tenure:
        # The lead's own quote, shared into this card's thread.
        buttons.append(
            {
                "type": "button",
                "action_id": QUOTE_ACTION,
                "text": _plain("Send quote PDF", BUTTON_LABEL_LIMIT),
                "value": str(card.lead_id),
            }
        )
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"esoteric_handoff_{card.handoff_id}",
                "elements": buttons,
            }
        )
    # The fallback is mrkdwn too (notifications read it): a customer called "<!channel>" must
    # not ping the channel.
    fallback = f"{headline}: {escape(card.customer)} ({escape(card.product or 'no product yet')})"
    return SlackMessage(_fallback(fallback), blocks)
