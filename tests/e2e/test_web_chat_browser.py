"""The web chat page as a customer sees it: ``esoteric serve`` in a subprocess, headless Chromium
(Debian's package) driven over the Chrome DevTools Protocol, a screenshot kept in
test-artifacts/.

The LLM is a stand-in Groq server in this process: its first answer streams word by word; after
that it fails, so the offline scripted agent answers (the breaker opens at the first failure),
which gives the page its buttons, the EMI quote and cited sources."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from core.catalogue import load_catalogue
from core.loan import emi
from core.money import format_money
from tests.support import groq_server as groq
from tests.support.browser import CHROMIUM, KEY, chromium, click, esoteric_serve, type_message
from tests.support.groq_server import GroqStandIn

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
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


async def test_a_customer_chats_on_the_web_page(tmp_path: Path) -> None:
    standin = GroqStandIn()
    await standin.start()
    # The first LLM call streams slowly enough to watch; every later call fails.
    standin.script(groq.text(STREAMED, token_delay=0.06))
    try:
        async with (
            esoteric_serve(tmp_path, standin.base_url, knowledge=True) as base,
            chromium(tmp_path) as page,
        ):
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
