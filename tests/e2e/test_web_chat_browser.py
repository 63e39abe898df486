"""The web chat page as a customer sees it: ``esoteric serve`` in a subprocess, headless Chromium
(Debian's package) driven over the Chrome DevTools Protocol, a screenshot kept in
test-artifacts/.

The LLM is a stand-in Groq server in this process: its first answer streams word by word; after
that it fails, so the offline scripted agent answers (the breaker opens at the first failure),
which gives the page its buttons, the EMI quote and cited sources."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from core.catalogue import load_catalogue
from core.loan import emi
from core.money import format_money
from tests.conftest import MODEL_DIR
from tests.support import groq_server as groq
from tests.support.groq_server import GroqStandIn

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
KEY = "page-key-0123456789abcdef"
STREAMED = (
    "A home loan is a fine choice. I can work out the exact EMI and a first eligibility check. "
    "Tell me the amount you need and the tenure."
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevTools:
    """Just enough of the Chrome DevTools Protocol: commands and their results."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        async with asyncio.timeout(30):
            while True:
                message = json.loads(await self.ws.recv())
                if message.get("id") == ident:
                    if "error" in message:
                        raise AssertionError(f"{method}: {message['error']}")
                    return dict(message.get("result", {}))

    async def js(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, what: str, limit: float = 30.0) -> Any:
        """Poll a page expression until it is truthy (a hang fails clearly; not a speed check)."""
        # While the page loads, the expression may not be evaluable yet: that is "not yet".
        expression = (
            f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
        )
        try:
            async with asyncio.timeout(limit):
                # The state lives in the page; polling it is the only way to observe it.
                while not (value := await self.js(expression)):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            transcript = await self.js("document.body ? document.body.innerText : ''")
            raise AssertionError(f"waited for {what}; the page shows:\n{transcript}") from None
        return value


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[DevTools]:
    profile = tmp_path / "chromium-profile"
    process = await asyncio.create_subprocess_exec(
        *[
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--window-size=900,1300",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        async with asyncio.timeout(30):
            while not port_file.exists() or not port_file.read_text().strip():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        port = port_file.read_text().split()[0]
        async with httpx.AsyncClient() as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            yield DevTools(ws)
    finally:
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def esoteric_serve(tmp_path: Path, groq_url: str) -> AsyncIterator[str]:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ESOTERIC_", "GROQ_", "TELEGRAM_", "SLACK_")) and k != "DATABASE_URL"
    }
    env.update(
        ESOTERIC_DATA_DIR=str(tmp_path / "data"),
        ESOTERIC_HTTP_PORT=str(port),
        ESOTERIC_API_KEYS=f"{KEY},operator-key-0123456789",
        ESOTERIC_WEB_CHAT_KEY=KEY,
        ESOTERIC_EMBEDDING_MODEL_DIR=str(MODEL_DIR),
        GROQ_API_KEY="gsk_" + "b" * 40,
        GROQ_BASE_URL=groq_url,
        ESOTERIC_LLM_MAX_RETRIES="0",
        ESOTERIC_LLM_BREAKER_FAILURES="1",
        ESOTERIC_LLM_BREAKER_COOLDOWN_SECONDS="600",
        ESOTERIC_LOG_FORMAT="json",
    )
    log_file = tmp_path / "serve.log"
    with log_file.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(120):
            while True:
                assert process.returncode is None, log_file.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{base}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                code = await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert code == 0, log_file.read_text()


async def test_a_customer_chats_on_the_web_page(tmp_path: Path) -> None:
    standin = GroqStandIn()
    await standin.start()
    # The first LLM call streams slowly enough to watch; every later call fails.
    standin.script(groq.text(STREAMED, token_delay=0.06))
    try:
        async with esoteric_serve(tmp_path, standin.base_url) as base, chromium(tmp_path) as page:
            await page.call("Page.enable")
            await page.call("Page.navigate", url=f"{base}/")
            await page.until("document.body.dataset.state === 'ready'", "the chat to connect")

            # The greeting, with the loans as buttons.
            labels = await page.until(
                "[...document.querySelectorAll('.msg.bot .choices button')]"
                ".map(b => b.textContent).join('|')",
                "the greeting's buttons",
            )
            assert labels.split("|")[:2] == ["Home Loan", "Personal Loan"]

            # A button pressed: the LLM's answer streams in, then settles.
            await click(page, "Home Loan")
            await page.until(
                "document.querySelector('.msg.bot.streaming') !== null", "the reply to stream"
            )
            await page.until(
                "document.querySelector('.msg.bot.streaming') === null", "the stream to finish"
            )
            streamed = await page.js(
                "(() => { const m = [...document.querySelectorAll('.msg.bot')].at(-1);"
                " return {text: m.querySelector('.text').innerText, deltas: m.dataset.deltas}; })()"
            )
            assert streamed["text"] == STREAMED
            # Each sentence once whole and checked; the last one comes with the whole reply.
            assert int(streamed["deltas"]) == 2
            assert await page.js("[...document.querySelectorAll('.msg.me')].at(-1).innerText") == (
                "Home Loan"
            )

            # A cited answer from the knowledge base, then the quote, one button and three lines.
            await type_message(page, "What documents do I need for a home loan?")
            sources = await page.until(
                "[...document.querySelectorAll('.msg.bot .sources')].map(s => s.innerText)"
                ".join('\\n')",
                "cited sources",
            )
            assert sources.startswith("Sources: ") and ".md" in sources
            for message in ("25 lakh", "20 years", "1.2 lakh a month"):
                before = await page.js("document.querySelectorAll('.msg.bot').length")
                await type_message(page, message)
                await page.until(
                    f"document.querySelectorAll('.msg.bot').length > {before}", message
                )
            rate = load_catalogue().get("home").annual_rate
            quote = f"EMI: {format_money(emi(2_500_000, rate, 240))} per month"
            await page.until(
                f"document.getElementById('log').innerText.includes({json.dumps(quote)})",
                "the EMI quote",
            )
            await page.until(
                "[...document.querySelectorAll('.msg.bot .choices button')]"
                ".some(b => b.textContent === 'Yes, call me' && !b.disabled)",
                "the advisor buttons",
            )
            shot = await page.call(
                "Page.captureScreenshot", format="png", captureBeyondViewport=True
            )
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "web-chat.png").write_bytes(base64.b64decode(shot["data"]))

            # What the page showed is what the store holds.
            session = await page.js("localStorage.getItem('esoteric-session')")
            async with httpx.AsyncClient() as client:
                view = (
                    await client.get(
                        f"{base}/api/v1/sessions/{session}", headers={"X-API-Key": KEY}
                    )
                ).json()
            assert view["messages"][-1]["text"].find(quote) >= 0
            assert [m["text"] for m in view["messages"] if m["role"] == "assistant"][1] == STREAMED
    finally:
        await standin.stop()


async def type_message(page: DevTools, text: str) -> None:
    """Types into the message box and presses Enter, as a person would."""
    await page.js("document.getElementById('input').focus()")
    await page.call("Input.insertText", text=text)
    for kind in ("keyDown", "keyUp"):
        await page.call(
            "Input.dispatchKeyEvent",
            type=kind,
            key="Enter",
            code="Enter",
            windowsVirtualKeyCode=13,
            **({"text": "\r"} if kind == "keyDown" else {}),
        )


async def click(page: DevTools, label: str) -> None:
    """A real mouse click in the middle of the enabled button with this label."""
    box = await page.until(
        "(() => { const b = [...document.querySelectorAll('.choices button')]"
        f".find(b => b.textContent === {json.dumps(label)} && !b.disabled);"
        " if (!b) return null; b.scrollIntoView(); const r = b.getBoundingClientRect();"
        " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()",
        f"the {label} button",
    )
    for kind in ("mousePressed", "mouseReleased"):
        await page.call(
            "Input.dispatchMouseEvent",
            type=kind,
            x=box["x"],
            y=box["y"],
            button="left",
            clickCount=1,
        )
