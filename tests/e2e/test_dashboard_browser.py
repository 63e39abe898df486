"""The sales dashboard as an admin sees it: ``esoteric serve`` in a subprocess with admin keys,
customers seeded through the real pipeline (the web API and a Telegram stand-in, the offline
scripted agent answering), headless Chromium over the DevTools protocol logging in, reading the
funnel, filtering by channel, opening a conversation, exporting CSV and logging out; screenshots
at desktop and phone widths kept in test-artifacts/.

The funnel the page shows is checked against a count kept here from what the customers were
told (a quote, a lead taken), not against the database."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.browser import (
    CHROMIUM,
    KEY,
    DevTools,
    chromium,
    esoteric_serve,
    screenshot,
    submit_form,
)
from tests.support.desk import QUALIFY
from tests.support.groq_server import GroqStandIn
from tests.support.telegram_server import TOKEN, TelegramServer, message_update

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ADMIN_KEY = "admin-key-0123456789abcdef-dashboard"
ADMIN_SECRET = "s" * 48
QUOTED = "Here is your Home Loan estimate"
UNANSWERED = "I don't have a reliable answer to that in our knowledge base"
LEAD_TAKEN = "I've passed your request to our loan advisors"
# Each customer's messages: the web's three, then Telegram's two.
WEB_CUSTOMERS = (
    QUALIFY,
    ("I need a home loan of 25 lakh for 20 years", "80000"),
    ("hello",),
    (
        "I want a home loan",
        "What is the capital of Mongolia?",
        "what is the capital city of Mongolia?",
    ),
)
TELEGRAM_CUSTOMERS = {
    7001: (*QUALIFY[:4], "Sita Devi", "9123456780"),
    7002: ("hi there",),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"
    ),
]


@dataclass
class Tally:
    """What the customers were told, per channel: the funnel counted independently."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    unanswered: int = 0

    def add(self, channel: str, replies: list[str]) -> None:
        row = self.counts.setdefault(
            channel, {"conversations": 0, "quotes": 0, "leads": 0, "claimed": 0, "won": 0}
        )
        row["conversations"] += 1
        row["quotes"] += any(QUOTED in r for r in replies)
        row["leads"] += any(LEAD_TAKEN in r for r in replies)
        self.unanswered += sum(r.startswith(UNANSWERED) for r in replies)

    def of(self, channel: str | None = None) -> dict[str, int]:
        rows = [self.counts[channel]] if channel else list(self.counts.values())
        return {step: sum(r[step] for r in rows) for step in rows[0]}


async def seed(base: str, telegram: TelegramServer) -> Tally:
    tally = Tally()
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as api:
        # The knowledge base ready first: a question it cannot answer is then a gap, not
        # "I can't look that up right now".
        async with asyncio.timeout(30):
            # The server's state, observed by asking it again.
            while not (await api.get("/ready")).json()["checks"]["knowledge"]["ok"]:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        for messages in WEB_CUSTOMERS:
            session = (await api.post("/api/v1/sessions")).json()["session_id"]
            replies = []
            for text in messages:
                answer = await api.post(
                    "/api/v1/chat", json={"session_id": session, "message": text}
                )
                assert answer.status_code == 200, answer.text
                replies.append(answer.json()["reply"] or "")
            tally.add("web", replies)
    for chat, lines in TELEGRAM_CUSTOMERS.items():
        for text in lines:
            sent = len(telegram.texts(chat))
            await telegram.push(message_update(telegram.next_update_id(), chat, text))
            await telegram.wait_messages(chat, sent + 1)
        tally.add("telegram", telegram.texts(chat))
    # The seeding did its job.
    assert (tally.of()["quotes"], tally.of()["leads"], tally.unanswered) == (3, 2, 2)
    return tally


async def shown_funnel(page: DevTools) -> dict[str, int]:
    await page.until("document.body.dataset.state === 'ready'", "the dashboard to load")
    steps = await page.js(
        "[...document.querySelectorAll('#funnel .step')]"
        ".map(s => [s.dataset.step, Number(s.querySelector('.count').textContent)])"
    )
    return dict(steps)


async def choose_channel(page: DevTools, channel: str) -> None:
    await page.js(
        f"(() => {{ const s = document.getElementById('channel'); s.value = {json.dumps(channel)};"
        " s.dispatchEvent(new Event('change')); })()"
    )


async def test_an_admin_reads_the_dashboard(tmp_path: Path) -> None:
    standin = GroqStandIn()  # answers 500: the breaker opens and the scripted agent answers
    await standin.start()
    try:
        async with (
            TelegramServer() as telegram,
            esoteric_serve(
                tmp_path,
                standin.base_url,
                ESOTERIC_ADMIN_KEYS=ADMIN_KEY,
                ESOTERIC_ADMIN_SECRET=ADMIN_SECRET,
                TELEGRAM_BOT_TOKEN=TOKEN,
                ESOTERIC_TELEGRAM_API_URL=telegram.base_url,
            ) as base,
            chromium(tmp_path) as page,
            httpx.AsyncClient(base_url=base, follow_redirects=False) as http,
        ):
            tally = await seed(base, telegram)

            # Nothing without a session: the page sends to the login form, the JSON refuses.
            assert (await http.get("/admin")).headers["location"] == "/admin/login"
            assert (await http.get("/api/v1/admin/funnel")).status_code == 401
            assert (await http.get("/admin/admin.js")).status_code == 401
            form = await http.get("/admin/login")
            assert form.status_code == 200 and 'name="key"' in form.text
            assert "script-src 'self'" in form.headers["content-security-policy"]
            assert "'unsafe-inline'" not in form.headers["content-security-policy"]
            refused = await http.post("/admin/login", data={"key": "not-the-admin-key"})
            assert refused.status_code == 401 and "not an admin key" in refused.text
            assert "set-cookie" not in refused.headers
            # A public API key is not an admin key.
            assert (await http.post("/admin/login", data={"key": KEY})).status_code == 401

            await page.call("Page.enable")
            await page.call("Page.navigate", url=f"{base}/admin")
            await page.until("location.pathname === '/admin/login'", "the login form")
            await page.until("document.getElementById('key') !== null", "the key field")
            await page.js("document.getElementById('key').value = 'wrong-key-again'")
            await submit_form(page, "form.login-box")
            await page.until("document.querySelector('.refused') !== null", "the refusal")
            said = await page.js("document.querySelector('.refused').innerText")
            assert "not an admin key" in said

            await page.js(f"document.getElementById('key').value = {json.dumps(ADMIN_KEY)}")
            await submit_form(page, "form.login-box")
            await page.until("location.pathname === '/admin'", "the dashboard")
            cookies = (await page.call("Network.getCookies", urls=[base]))["cookies"]
            [cookie] = [c for c in cookies if c["name"] == "esoteric_admin"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
            assert await page.js("document.cookie") == ""  # out of the page script's reach
            signed_in = {"Cookie": f"esoteric_admin={cookie['value']}"}
            shown = await http.get("/admin", headers=signed_in)
            assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
            assert shown.headers["x-frame-options"] == "DENY"
            assert '<script src="/admin/admin.js"' in shown.text

            # The funnel the seeding implies, for all channels and then each channel.
            assert await shown_funnel(page) == tally.of()
            conversion = await page.js(
                "document.querySelector('#funnel .step[data-step=quotes] .conversion').innerText"
            )
            assert conversion.startswith("50%")  # 3 quotes of 6 conversations
            await choose_channel(page, "telegram")
            assert await shown_funnel(page) == tally.of("telegram")
            await choose_channel(page, "web")
            assert await shown_funnel(page) == tally.of("web")
            await choose_channel(page, "")
            assert await shown_funnel(page) == tally.of()
            # Today, and a custom period of today alone: the same customers.
            await page.js("document.querySelector('.periods button[data-days=\"1\"]').click()")
            assert await shown_funnel(page) == tally.of()
            await page.js("document.querySelector('.periods button[data-days=custom]').click()")
            today = await page.js("new Date().toISOString().slice(0, 10)")
            await page.js(
                f"document.getElementById('from').value = {json.dumps(today)};"
                f" document.getElementById('to').value = {json.dumps(today)}"
            )
            await submit_form(page, "#custom")
            assert await shown_funnel(page) == tally.of()
            assert await page.js("document.getElementById('period').innerText") == (
                f"{today} to {today}"
            )
            assert f"from={today}" in await page.js("document.getElementById('leads-csv').href")
            bars = await page.js("document.querySelectorAll('#daily-chart rect').length")
            assert bars == 2  # today, one bar segment per channel

            # The knowledge gap: both wordings as one question, its example conversation opens.
            gap = await page.js(
                "(() => { const g = document.querySelector('#gaps li');"
                " return {question: g.querySelector('.question').innerText,"
                " count: g.querySelector('.count').innerText}; })()"
            )
            assert "Mongolia" in gap["question"] and gap["count"] == f"× {tally.unanswered}"
            await page.js("document.querySelector('#gaps a[data-conversation]').click()")
            await page.until(
                "document.getElementById('transcript').innerText.includes('capital city of')",
                "the gap's example conversation",
            )

            # A conversation found by name: the transcript, the quote in it, the phone masked.
            await page.js("document.getElementById('q').value = 'Ravi'")
            await submit_form(page, "#search")
            await page.until(
                "[...document.querySelectorAll('#results button')]"
                ".some(b => b.innerText.includes('Ravi Kumar'))",
                "Ravi Kumar among the results",
            )
            await page.js(
                "[...document.querySelectorAll('#results button')]"
                ".find(b => b.innerText.includes('Ravi Kumar')).click()"
            )
            transcript = await page.until(
                "document.querySelector('#transcript .msg.out') &&"
                " document.getElementById('transcript').innerText",
                "the transcript",
            )
            assert QUOTED in transcript and LEAD_TAKEN in transcript.replace("’", "'")
            assert "I need a home loan of 50 lakh for 20 years" in transcript
            # Partly masked, in the header and where the customer typed it.
            assert "9876543210" not in transcript and "+91 98xxxxx210" in transcript
            ARTIFACTS.mkdir(exist_ok=True)
            desktop = await screenshot(page, 1280, 800, mobile=False)
            (ARTIFACTS / "dashboard-desktop.png").write_bytes(desktop)
            phone = await screenshot(page, 390, 844, mobile=True)
            (ARTIFACTS / "dashboard-phone.png").write_bytes(phone)
            overflow = await page.js("document.documentElement.scrollWidth > innerWidth + 1")
            assert not overflow, "the dashboard scrolls sideways on a phone"

            # The CSV exports, with the page's session.
            export = await page.js(
                "(async () => { const r = await fetch(document.getElementById('leads-csv').href);"
                " return {status: r.status, type: r.headers.get('content-type'),"
                " text: await r.text()}; })()"
            )
            assert export["status"] == 200 and export["type"].startswith("text/csv")
            rows = [line for line in export["text"].splitlines() if line.strip()]
            assert len(rows) == 1 + tally.of()["leads"]
            funnel_csv = await page.js(
                "fetch(document.getElementById('funnel-csv').href).then(r => r.text())"
            )
            assert "conversations" in funnel_csv

            # Logout (CSRF-checked): the old cookie is refused afterwards, and so is a forgery.
            await page.js("document.querySelector('#logout button').click()")
            await page.until("location.pathname === '/admin/login'", "the login form again")
            after = (await page.call("Network.getCookies", urls=[base]))["cookies"]
            assert not [c for c in after if c["name"] == "esoteric_admin"]
            replay = {"Cookie": f"esoteric_admin={cookie['value']}"}
            assert (await http.get("/admin", headers=replay)).status_code == 303
            assert (await http.get("/api/v1/admin/funnel", headers=replay)).status_code == 401
            logout = await http.post("/admin/logout", headers=replay, data={"csrf": "x"})
            assert logout.headers["location"] == "/admin/login"
            forged = {"Cookie": f"esoteric_admin={cookie['value'][:-2]}xx"}
            assert (await http.get("/admin", headers=forged)).status_code == 303

            # Guessing: after five wrong keys from one address (its count was cleared by the
            # login above), even the right key waits.
            for _ in range(5):
                assert (await http.post("/admin/login", data={"key": "guess"})).status_code == 401
            locked = await http.post("/admin/login", data={"key": ADMIN_KEY})
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
            assert "set-cookie" not in locked.headers
    finally:
        await standin.stop()
