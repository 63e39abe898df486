"""The outbound port against the stand-in Web API: splitting within Slack's limits, buttons, and
streaming by posting then updating."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from adapters.slack import SlackChannel, SlackConfig
from adapters.slack.render import SECTION_LIMIT
from bot.runtime import Runtime
from core.messages import Choice, Citation, Reply, Target
from core.salesdesk import SalesDesk
from tests.adapters.slack.conftest import BOT_TOKEN, SECRET
from tests.support.slack_server import SlackStandIn

MakeChannel = Callable[[float], SlackChannel]
THREAD = Target("slack", "C0CHANNEL01", "1767225660.001100")


class WrittenReply:
    """A reply stream as an agent produces one: deltas, then the authoritative final reply."""

    def __init__(self, deltas: list[str], final: Reply) -> None:
        self.deltas = deltas
        self._final = final

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        for delta in self.deltas:
            yield delta

    async def final(self) -> Reply:
        return self._final


@pytest.fixture
def make_channel(runtime: Runtime, slack_api: SlackStandIn) -> MakeChannel:
    def make(stream_interval: float) -> SlackChannel:
        config = SlackConfig(
            bot_token=BOT_TOKEN,
            signing_secret=SECRET,
            api_url=slack_api.api_url,
            stream_interval=stream_interval,
        )
        channel = SlackChannel(runtime.service, SalesDesk(runtime.db, runtime.catalogue), config)
        return channel

    return make


def _sections(params: dict[str, object]) -> list[str]:
    blocks = params["blocks"]
    assert isinstance(blocks, list)
    return [b["text"]["text"] for b in blocks if b["type"] == "section"]


async def test_long_reply_is_split_within_limits_and_loses_no_text(
    make_channel: MakeChannel, slack_api: SlackStandIn
) -> None:
    channel = make_channel(1.0)
    paragraphs = [f"Paragraph {i}: " + ("word " * 120).strip() for i in range(300)]
    text = "\n\n".join(paragraphs)
    await channel.send(THREAD, Reply(text, citations=(Citation("home-loan.md", "Fees"),)))
    posts = slack_api.posts()
    # The stand-in refuses what real Slack refuses, so every post being accepted matters.
    assert len(posts) >= 2
    assert all(len(p["blocks"]) <= 50 for p in posts)
    sections = [s for p in posts for s in _sections(p)]
    assert all(len(s) <= SECTION_LIMIT for s in sections)
    assert "".join(sections).split() == text.split()
    assert all(p["thread_ts"] == THREAD.thread for p in posts)
    last = posts[-1]["blocks"][-1]
    assert last["type"] == "context" and "home-loan.md (Fees)" in last["elements"][0]["text"]


async def test_choices_become_buttons(make_channel: MakeChannel, slack_api: SlackStandIn) -> None:
    channel = make_channel(1.0)
    reply = Reply(
        "Would you like a call?",
        choices=(Choice("Yes, call me", "yes"), Choice("Open lead", "/esoteric lead 7")),
    )
    await channel.send(THREAD, reply)
    [post] = slack_api.posts()
    [actions] = [b for b in post["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e["value"]) for e in actions["elements"]] == [
        ("esoteric_choice_0", "yes"),
        ("esoteric_desk_1", "/esoteric lead 7"),
    ]


async def test_stream_posts_then_updates_and_ends_with_the_final_reply(
    make_channel: MakeChannel, slack_api: SlackStandIn
) -> None:
    channel = make_channel(0.0)  # no pacing: every delta is shown
    final = Reply("Home loans run up to **30 years** <b>.", citations=(Citation("a.md", "A"),))
    await channel.stream(THREAD, WrittenReply(["Home loans", " run up", " to 30 years"], final))
    [post] = slack_api.posts()
    updates = slack_api.calls_to("chat.update")
    assert _sections(post) == ["Home loans"]
    assert [_sections(u.params) for u in updates] == [
        ["Home loans run up"],
        ["Home loans run up to 30 years"],
        ["Home loans run up to *30 years* &lt;b&gt;."],  # exactly the final reply
    ]
    assert {u.params["ts"] for u in updates} == {slack_api.messages[0]["ts"]}
    assert updates[-1].params["blocks"][-1]["type"] == "context"


async def test_stream_is_paced(make_channel: MakeChannel, slack_api: SlackStandIn) -> None:
    channel = make_channel(3600.0)  # far apart: only the first post and the final update
    deltas = [f"word{i} " for i in range(50)]
    await channel.stream(THREAD, WrittenReply(deltas, Reply("".join(deltas).strip())))
    assert len(slack_api.posts()) == 1
    [update] = slack_api.calls_to("chat.update")
    assert _sections(update.params) == ["".join(deltas).strip()]


async def test_stream_whose_final_reply_is_long_continues_in_new_messages(
    make_channel: MakeChannel, slack_api: SlackStandIn
) -> None:
    channel = make_channel(0.0)
    long_text = "\n".join(f"- point {i}: " + "x" * 80 for i in range(2000))
    await channel.stream(THREAD, WrittenReply(["Working", " on it"], Reply(long_text)))
    posts = slack_api.posts()
    updates = slack_api.calls_to("chat.update")
    shown = _sections(updates[-1].params) + [s for p in posts[1:] for s in _sections(p)]
    assert len(posts) >= 2
    assert "".join(shown).replace("•", "-").split() == long_text.split()


async def test_stream_without_deltas_just_posts(
    make_channel: MakeChannel, slack_api: SlackStandIn
) -> None:
    channel = make_channel(0.0)
    await channel.stream(THREAD, WrittenReply([], Reply("Fallback answer")))
    assert [_sections(p) for p in slack_api.posts()] == [["Fallback answer"]]
    assert slack_api.calls_to("chat.update") == []


class FailingReply(WrittenReply):
    async def final(self) -> Reply:
        raise RuntimeError("the agent failed mid-answer")


async def test_stream_that_fails_after_posting_says_it_was_interrupted(
    make_channel: MakeChannel, slack_api: SlackStandIn
) -> None:
    channel = make_channel(3600.0)
    with pytest.raises(RuntimeError):
        await channel.stream(THREAD, FailingReply(["Home loans need"], Reply("")))
    [update] = slack_api.calls_to("chat.update")
    assert _sections(update.params) == ["Home loans need … (interrupted)"]
