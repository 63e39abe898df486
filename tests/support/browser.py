"""Headless Chromium (Debian's package) driven over the Chrome DevTools Protocol, and
``esoteric serve`` in a subprocess: what the web chat page's browser tests share."""

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
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import MODEL_DIR

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KEY = "page-key-0123456789abcdef"


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
async def chromium(tmp_path: Path, *flags: str) -> AsyncIterator[DevTools]:
    """Headless Chromium on about:blank, ``flags`` added to its command line."""
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
            *flags,
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
async def esoteric_serve(
    tmp_path: Path, groq_url: str, *, knowledge: bool = False, **more: str
) -> AsyncIterator[str]:
    """``esoteric serve`` in a subprocess (its page key ``KEY``), its LLM the Groq stand-in at
    ``groq_url``; ``more`` adds environment variables. With ``knowledge``, yields only once the
    fresh store's ingestion is done (until then turns are answered without retrieval, and on a
    slow machine that can outlast a test's first questions)."""
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
        **more,
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
            while knowledge:
                assert process.returncode is None, log_file.read_text()
                checks = (await client.get(f"{base}/ready")).json()["checks"]
                if checks["knowledge"]["ok"]:
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
    await mouse_click(page, box)


async def mouse_click(page: DevTools, box: dict[str, float]) -> None:
    """Press and release the left button at ``box``'s x, y, as a person's click does."""
    for kind in ("mousePressed", "mouseReleased"):
        await page.call(
            "Input.dispatchMouseEvent",
            type=kind,
            x=box["x"],
            y=box["y"],
            button="left",
            clickCount=1,
        )


async def screenshot(page: DevTools, width: int, height: int, *, mobile: bool) -> bytes:
    """A PNG of the whole page laid out at ``width`` x ``height`` CSS pixels."""
    await page.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=mobile,
    )
    # Let the layout settle at the new width before the picture.
    await page.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    return base64.b64decode(shot["data"])


async def submit_form(page: DevTools, selector: str) -> None:
    """Submits a form as its submit button would (the caller waits for what follows)."""
    await page.js(f"document.querySelector({json.dumps(selector)}).requestSubmit()")
