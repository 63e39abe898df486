"""A voice message on the web chat page: ``esoteric serve`` in a subprocess, headless Chromium
with a fake microphone that plays real espeak-ng speech, the page's MediaRecorder recording it
and posting it to ``POST /api/v1/sessions/{id}/voice``; the Groq stand-in hears it. The page
shows what was heard and the bot's reply. Without a microphone the page says so and typing still
works."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.audio import speak
from tests.support.browser import (
    CHROMIUM,
    DevTools,
    chromium,
    esoteric_serve,
    mouse_click,
    type_message,
)
from tests.support.groq_server import MAGIC, GroqStandIn, heard

ASK = "I need a home loan of 25 lakh for 20 years"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"
    ),
]

LAST_MINE = "[...document.querySelectorAll('.msg.me')].map(m => m.innerText).at(-1) || ''"
LAST_BOT = "[...document.querySelectorAll('.msg.bot')].map(m => m.innerText).at(-1) || ''"


async def press(page: DevTools, selector: str) -> None:
    """A real mouse click in the middle of the element."""
    box = await page.until(
        f"(() => {{ const b = document.querySelector({json.dumps(selector)});"
        " if (!b || b.disabled || b.hidden) return null; const r = b.getBoundingClientRect();"
        " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()",
        f"{selector} to be pressable",
    )
    await mouse_click(page, box)


async def press_enter_on(page: DevTools, selector: str) -> None:
    """The keyboard: focus the element and press Enter, as a person tabbing to it would."""
    await page.js(f"document.querySelector({json.dumps(selector)}).focus()")
    for kind in ("keyDown", "keyUp"):
        await page.call(
            "Input.dispatchKeyEvent",
            type=kind,
            key="Enter",
            code="Enter",
            windowsVirtualKeyCode=13,
            **({"text": "\r"} if kind == "keyDown" else {}),
        )


async def test_a_customer_sends_a_voice_message_from_the_page(tmp_path: Path) -> None:
    speech = speak(ASK, fmt="wav")
    standin = GroqStandIn()
    await standin.start()
    standin.hear(heard(ASK))
    microphone = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech.path}",
        "--autoplay-policy=no-user-gesture-required",
    )
    try:
        async with (
            esoteric_serve(tmp_path, standin.base_url) as base,
            chromium(tmp_path, *microphone) as page,
        ):
            await page.call("Page.enable")
            await page.call("Page.navigate", url=f"{base}/")
            await page.until("document.body.dataset.state === 'ready'", "the chat to connect")
            await page.until("document.querySelector('.msg.bot .choices') !== null", "the greeting")
            label = await page.js("document.getElementById('mic').getAttribute('aria-label')")
            assert label == "Record a voice message"

            # Pressed from the keyboard: recording, visibly and for screen readers.
            await press_enter_on(page, "#mic")
            await page.until("document.body.dataset.recording === 'on'", "recording to start")
            state = await page.js(
                "({pressed: document.getElementById('mic').getAttribute('aria-pressed'),"
                " label: document.getElementById('mic').getAttribute('aria-label'),"
                " line: document.getElementById('recording').innerText})"
            )
            assert state["pressed"] == "true" and state["label"] == "Stop recording and send"
            assert state["line"].startswith("● Recording 0:0")
            await asyncio.sleep(2.0)
            await press(page, "#mic")  # pressed again: sent

            await page.until(f"({LAST_MINE}) === {json.dumps('🎤 ' + ASK)}", "the transcript")
            await page.until(f"({LAST_BOT}).includes('monthly income')", "the bot's reply")
            assert await page.js("document.body.dataset.recording") == ""
            assert await page.js("document.getElementById('mic').getAttribute('aria-pressed')") == (
                "false"
            )

            # What the stand-in heard is what the browser recorded: one WebM upload.
            (upload,) = standin.audio_requests
            assert upload.filename.endswith(".webm")
            assert upload.data.startswith(MAGIC["webm"][0])
            assert len(upload.data) > 2_000  # two seconds of Opus, not an empty container
            # The reply appears once, and typing still works after it.
            replies = await page.js(
                "[...document.querySelectorAll('.msg.bot')]"
                ".filter(m => m.innerText.includes('monthly income')).length"
            )
            assert replies == 1
            await type_message(page, "my salary is 1.5 lakh a month")
            await page.until(f"({LAST_BOT}).includes('EMI')", "the EMI quote")
    finally:
        await standin.stop()


async def test_without_a_microphone_the_page_says_so_and_typing_works(tmp_path: Path) -> None:
    standin = GroqStandIn()
    await standin.start()
    try:
        async with (
            esoteric_serve(tmp_path, standin.base_url) as base,
            chromium(tmp_path, "--deny-permission-prompts") as page,
        ):
            await page.call("Page.enable")
            await page.call("Page.navigate", url=f"{base}/")
            await page.until("document.body.dataset.state === 'ready'", "the chat to connect")
            await page.until("document.querySelector('.msg.bot .choices') !== null", "the greeting")
            await press(page, "#mic")
            notice = await page.until(
                "[...document.querySelectorAll('.msg.system')].map(m => m.innerText).join('|')",
                "a notice about the microphone",
            )
            assert "You can still type your message." in notice
            assert await page.js("document.body.dataset.recording || ''") == ""
            await type_message(page, "hi")
            await page.until(
                "[...document.querySelectorAll('.msg.me')].some(m => m.innerText === 'hi')",
                "the typed message",
            )
            assert standin.audio_requests == []
    finally:
        await standin.stop()
