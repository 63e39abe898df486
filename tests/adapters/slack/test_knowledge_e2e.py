"""A rep's product questions answered from the real knowledge base (embedded Chroma with the
bundled documents and the MiniLM model), in a DM and in a channel thread, with citations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from adapters.slack import SlackChannel
from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import open_runtime
from bot.settings import load_settings
from core.salesdesk import CATALOGUE_SOURCE
from tests.adapters.slack.conftest import BOT_TOKEN, SECRET, SlackClient, event
from tests.conftest import MODEL_DIR
from tests.support.slack_server import BOT_USER, SlackStandIn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL_DIR / "onnx").is_dir(), reason="embedding model not present"),
]


@pytest.fixture
async def kb_slack(
    tmp_path: Path, slack_api: SlackStandIn
) -> AsyncIterator[tuple[SlackClient, SlackChannel]]:
    settings = load_settings(
        data_dir=tmp_path,
        embedding_model_dir=MODEL_DIR,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack_api.api_url,
    )
    async with open_runtime(settings, scheduler=False) as runtime:
        assert runtime.knowledge is not None, runtime.knowledge_problem
        [channel] = build_channels(runtime)
        assert isinstance(channel, SlackChannel)
        await channel.start()
        try:
            app = create_app(runtime, [channel])
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                yield SlackClient(http), channel
        finally:
            await channel.stop()


def _context(post: dict[str, object]) -> str:
    blocks = post["blocks"]
    assert isinstance(blocks, list)
    return " ".join(e["text"] for b in blocks if b["type"] == "context" for e in b["elements"])


async def test_dm_and_mention_get_answers_cited_from_the_knowledge_base(
    kb_slack: tuple[SlackClient, SlackChannel], slack_api: SlackStandIn
) -> None:
    slack, channel = kb_slack
    dm = event("event_message_im.json", text="Which documents does a home loan need?")
    mention = event(
        "event_app_mention.json", text=f"<@{BOT_USER}> documents needed for a personal loan?"
    )
    assert (await slack.event(dm)).status_code == 200
    assert (await slack.event(mention)).status_code == 200
    await channel.idle()

    posts = {p["channel"]: p for p in slack_api.posts()}
    assert set(posts) == {"D0DMCHAN01", "C0CHANNEL01"}
    assert "thread_ts" not in posts["D0DMCHAN01"]
    assert posts["C0CHANNEL01"]["thread_ts"] == mention["event"]["ts"]
    dm_sources = _context(posts["D0DMCHAN01"])
    assert "home-loan.md" in dm_sources and CATALOGUE_SOURCE in dm_sources
    assert "personal-loan.md" in _context(posts["C0CHANNEL01"])
    assert "salary slips" in posts["D0DMCHAN01"]["text"].lower()
