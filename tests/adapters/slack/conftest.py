"""Fixtures for the Slack channel: a stand-in Slack, a runtime on SQLite, the channel built by
the composition root, and an HTTP client that signs requests the way Slack does."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from adapters.slack import SlackChannel
from bot.asgi import create_app
from bot.channels import build_channels
from bot.runtime import Runtime, open_runtime
from bot.settings import load_settings
from core.store.models import Message
from tests.support.seeded import seed_database
from tests.support.slack_server import PAYLOADS, SlackStandIn, sample

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the fake signing secret of the payload samples
BOT_TOKEN = "xoxb-0000-test-token"
APP_TOKEN = "xapp-1-test-token"
# The sales team: the sample payloads' user is a member of the sales channel; the admin is not.
SALES = "C0SALES0001"
REP = "U0HUMAN001"
ADMIN = "U0ADMIN001"
OUTSIDER = "U0OUTSIDE01"  # in the workspace, not in the sales channel, not an admin


def sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = f"v0:{ts}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def event(name: str, **changes: Any) -> dict[str, Any]:
    """A sample event envelope with fields of its inner ``event`` replaced."""
    body = sample(name)
    body["event"].update(changes)
    return body


class SlackClient:
    """Posts to /slack/events as Slack would."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(
        self,
        body: bytes,
        content_type: str = "application/json",
        retry: int | None = None,
        secret: str = SECRET,
        timestamp: int | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": content_type, **sign(body, secret, timestamp)}
        if retry is not None:
            headers["X-Slack-Retry-Num"] = str(retry)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return await self.http.post("/slack/events", content=body, headers=headers)

    async def event(self, body: dict[str, Any], retry: int | None = None) -> httpx.Response:
        return await self.post(json.dumps(body).encode(), retry=retry)

    async def form(self, fields: dict[str, str]) -> httpx.Response:
        from urllib.parse import urlencode

        return await self.post(urlencode(fields).encode(), "application/x-www-form-urlencoded")


@pytest.fixture
async def slack_api() -> AsyncIterator[SlackStandIn]:
    server = SlackStandIn()
    await server.start()
    server.add_user(REP, "Asha Rao")
    server.add_user(ADMIN, "Meera Iyer")
    server.add_user(OUTSIDER, "Olu Outsider")
    server.set_members(SALES, [REP])
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def runtime(tmp_path: Path, slack_api: SlackStandIn) -> AsyncIterator[Runtime]:
    settings = load_settings(
        data_dir=tmp_path,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=slack_api.api_url,
        slack_sales_channel=SALES,
        admins=f"slack:{ADMIN}",
    )
    await seed_database(settings)
    async with open_runtime(settings, scheduler=False) as rt:
        yield rt


@pytest.fixture
async def channel(runtime: Runtime) -> AsyncIterator[SlackChannel]:
    built = [c for c in build_channels(runtime) if c.name == "slack"]
    assert len(built) == 1 and isinstance(built[0], SlackChannel)
    slack = built[0]
    await slack.start()
    try:
        yield slack
    finally:
        await slack.stop()


@pytest.fixture
async def slack(runtime: Runtime, channel: SlackChannel) -> AsyncIterator[SlackClient]:
    app = create_app(runtime, [channel])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://esoteric.test") as http:
        yield SlackClient(http)


async def stored_messages(runtime: Runtime, **where: Any) -> int:
    async with runtime.db.transaction() as session:
        query = select(func.count()).select_from(Message)
        for column, value in where.items():
            query = query.where(getattr(Message, column) == value)
        return int(await session.scalar(query) or 0)


__all__ = [
    "ADMIN",
    "OUTSIDER",
    "PAYLOADS",
    "REP",
    "SALES",
    "SECRET",
    "SlackClient",
    "event",
    "sign",
    "stored_messages",
]
