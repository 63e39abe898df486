"""The dashboard's JSON and CSV through the real app: refused without an admin key, the key as
X-API-Key or Bearer, the session cookie, and a cookie replayed after logout refused."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select, update

from adapters.http.admin_api import _csv_cell
from adapters.http.admin_auth import COOKIE, SESSION_MAX_AGE, AdminAuth
from bot.settings import load_settings
from core.errors import ConfigError
from core.messages import utcnow
from core.store.models import AdminSession
from tests.adapters.http.conftest import KEY, Api, running_api

ADMIN_KEY = "admin-key-0123456789abcdef-test"
SECRET = "s" * 40
ROUTES = [
    "/api/v1/admin/funnel",
    "/api/v1/admin/daily?days=30",
    "/api/v1/admin/handoffs?days=1",
    "/api/v1/admin/llm",
    "/api/v1/admin/gaps",
    "/api/v1/admin/conversations?q=asha",
    "/api/v1/admin/leads.csv",
    "/api/v1/admin/funnel.csv",
]


@pytest.fixture
async def admin_api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path, admin_keys=ADMIN_KEY, admin_secret=SECRET) as api:
        yield api


def _auth(api: Api) -> AdminAuth:
    auth = api.app.state.admin_auth
    assert isinstance(auth, AdminAuth)
    return auth


async def _lead_conversation(api: Api, name: str = "Asha Verma") -> str:
    session_id = await api.new_session()
    for text in [
        "I need a home loan",
        "25 lakh",
        "20 years",
        "my salary is 1.2 lakh a month",
        "yes",
        "yes",
        name,
        "98765 43210",
    ]:
        response = await api.client.post(
            "/api/v1/chat",
            json={"session_id": session_id, "message": text},
            headers=api.headers(),
        )
        assert response.status_code == 200, response.text
    return session_id


@pytest.mark.parametrize("route", ROUTES)
async def test_refused_without_an_admin_key(admin_api: Api, route: str) -> None:
    for headers in (
        {},
        {"X-API-Key": KEY},  # a public API key is not an admin key
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": ADMIN_KEY + "x"},
        {"Cookie": f"{COOKIE}=forged"},
    ):
        response = await admin_api.client.get(route, headers=headers)
        assert response.status_code == 401, (route, headers)
        assert response.json() == {"detail": "admin key or dashboard login required"}


async def test_the_key_as_x_api_key_or_bearer(admin_api: Api) -> None:
    for headers in ({"X-API-Key": ADMIN_KEY}, {"Authorization": f"Bearer {ADMIN_KEY}"}):
        for route in ROUTES:
            response = await admin_api.client.get(route, headers=headers)
            assert response.status_code == 200, (route, response.text)
            assert response.headers["cache-control"] == "no-store"


async def test_the_shapes_the_page_reads(admin_api: Api) -> None:
    await _lead_conversation(admin_api)
    headers = {"X-API-Key": ADMIN_KEY}
    get = admin_api.client.get
    funnel = (await get("/api/v1/admin/funnel?days=1", headers=headers)).json()
    assert set(funnel) >= {"period", "channel", "steps"}
    assert [s["step"] for s in funnel["steps"]] == [
        "conversations",
        "quotes",
        "leads",
        "claimed",
        "won",
    ]
    assert [s["count"] for s in funnel["steps"]] == [1, 1, 1, 0, 0]
    assert funnel["steps"][0]["conversion"] is None and funnel["steps"][1]["conversion"] == 1.0
    assert funnel["channel"] is None and funnel["period"]["from"] == funnel["period"]["to"]
    web = (await get("/api/v1/admin/funnel?days=7&channel=telegram", headers=headers)).json()
    assert web["channel"] == "telegram" and web["steps"][0]["count"] == 0

    daily = (await get("/api/v1/admin/daily?days=1", headers=headers)).json()
    [today] = daily["days"]
    assert today["channel"] == "web" and today["conversations"] == 1 and today["leads"] == 1
    assert today["messages"] == 16

    llm = (await get("/api/v1/admin/llm", headers=headers)).json()
    assert llm["currency"] == "USD" and llm["estimated_cost"] == "0.0000"
    assert llm["turns"] == 0 and llm["fallback_rate"] is None
    assert llm["latency_ms"]["p50"] is not None

    handoffs = (await get("/api/v1/admin/handoffs", headers=headers)).json()
    assert handoffs["reps"] == [] and handoffs["median_minutes_to_claim"] is None

    found = (await get("/api/v1/admin/conversations?q=98765", headers=headers)).json()
    [hit] = found["results"]
    assert hit["customer"] == "Asha Verma" and hit["phone"] == "+91 98xxxxx210"
    whole = await get("/api/v1/admin/conversations?q=asha&unmask=1", headers=headers)
    assert whole.json()["results"][0]["phone"] == "+919876543210"

    transcript = (await get(f"/api/v1/admin/conversations/{hit['id']}", headers=headers)).json()
    assert transcript["phone"] == "+91 98xxxxx210"
    # The number the customer typed, and the bot repeated, is masked in the messages too.
    texts = " ".join(m["text"] for m in transcript["messages"])
    assert "98xxxxx210" in texts and "9876543210" not in texts.replace(" ", "")
    plain = await get(f"/api/v1/admin/conversations/{hit['id']}?unmask=1", headers=headers)
    assert "9876543210" in " ".join(m["text"] for m in plain.json()["messages"]).replace(" ", "")
    assert transcript["messages"][0] == {
        "at": transcript["messages"][0]["at"],
        "direction": "in",
        "author": transcript["messages"][0]["author"],
        "text": "I need a home loan",
        "citations": [],
        "tool_calls": [],
        "handoff": False,
    }
    assert (await get("/api/v1/admin/conversations/999999", headers=headers)).status_code == 404

    bad = await get("/api/v1/admin/funnel?from=2026-12-02&to=2026-11-01", headers=headers)
    assert bad.status_code == 422


async def test_csv_exports(admin_api: Api) -> None:
    await _lead_conversation(admin_api)
    headers = {"X-API-Key": ADMIN_KEY}
    leads = await admin_api.client.get("/api/v1/admin/leads.csv", headers=headers)
    assert leads.headers["content-type"] == "text/csv; charset=utf-8"
    assert leads.headers["content-disposition"].startswith('attachment; filename="esoteric-leads-')
    rows = list(csv.DictReader(io.StringIO(leads.text)))
    assert len(rows) == 1
    assert rows[0]["phone"] == "+91 98xxxxx210" and rows[0]["consent"] == "yes"
    assert rows[0]["name"] == "Asha Verma"
    assert rows[0]["product"] == "home" and rows[0]["amount"] == "2500000.00"
    funnel = await admin_api.client.get("/api/v1/admin/funnel.csv?days=1", headers=headers)
    assert funnel.headers["content-type"] == "text/csv; charset=utf-8"
    assert list(csv.reader(io.StringIO(funnel.text))) == [
        ["step", "count", "conversion"],
        ["conversations", "1", ""],
        ["quotes", "1", "1.0"],
        ["leads", "1", "1.0"],
        ["claimed", "0", "0.0"],
        ["won", "0", ""],
    ]


async def test_the_cookie_and_its_replay_after_logout(admin_api: Api) -> None:
    auth = _auth(admin_api)
    assert await auth.start_session(KEY) is None  # not an admin key
    cookie = await auth.start_session(ADMIN_KEY)
    assert cookie is not None
    client = admin_api.client
    with_cookie = {"Cookie": f"{COOKIE}={cookie}"}
    assert (await client.get("/api/v1/admin/funnel", headers=with_cookie)).status_code == 200
    token = auth.csrf_token(cookie)
    assert auth.check_csrf(cookie, token)
    # The token with its last character changed (to another one: a fixed "0" was the same
    # token whenever it already ended in "0").
    assert not auth.check_csrf(cookie, token[:-1] + ("1" if token.endswith("0") else "0"))
    assert not auth.check_csrf(cookie, None)
    other = await auth.start_session(ADMIN_KEY)
    assert other is not None and not auth.check_csrf(other, token)

    await auth.end_session(cookie)
    replayed = await client.get("/api/v1/admin/funnel", headers=with_cookie)
    assert replayed.status_code == 401
    assert not await auth.session_is_live(cookie)
    # The other session is untouched.
    assert await auth.session_is_live(other)
    # A cookie signed with another secret, for a live session id, is a forgery.
    session_id = URLSafeTimedSerializer(SECRET, salt="esoteric.admin.session").loads(other)
    forged = URLSafeTimedSerializer("t" * 40, salt="esoteric.admin.session").dumps(session_id)
    assert not await auth.session_is_live(forged)
    response = await client.get("/api/v1/admin/funnel", headers={"Cookie": f"{COOKIE}={forged}"})
    assert response.status_code == 401


async def test_without_admin_keys_there_is_no_dashboard_api(api: Api) -> None:
    response = await api.client.get("/api/v1/admin/funnel", headers={"X-API-Key": KEY})
    assert response.status_code in (401, 404)


def test_admin_keys_need_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ESOTERIC_ADMIN_SECRET"):
        load_settings(data_dir=tmp_path, admin_keys=ADMIN_KEY)
    with pytest.raises(ConfigError, match="ESOTERIC_ADMIN_SECRET"):
        load_settings(data_dir=tmp_path, admin_keys=ADMIN_KEY, admin_secret="short")
    with pytest.raises(ConfigError, match="differ"):
        load_settings(data_dir=tmp_path, admin_keys=KEY, api_keys=KEY, admin_secret=SECRET)
    settings = load_settings(
        data_dir=tmp_path, admin_keys=f"{ADMIN_KEY}, other", admin_secret=SECRET
    )
    assert [k.get_secret_value() for k in settings.admin_keys] == [ADMIN_KEY, "other"]
    assert str(settings.llm_price_per_million_tokens) == "0.59"
    assert settings.admin_requests_per_minute == 600


def test_csv_cells_are_never_formulas() -> None:
    assert _csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert _csv_cell("+919876543210") == "+919876543210"
    assert _csv_cell("-12.5") == "-12.5"
    assert _csv_cell("Asha") == "Asha" and _csv_cell(3) == 3


async def test_an_old_session_is_refused_and_forgotten(admin_api: Api) -> None:
    auth = _auth(admin_api)
    cookie = await auth.start_session(ADMIN_KEY)
    assert cookie is not None and await auth.session_is_live(cookie)
    async with admin_api.runtime.db.transaction() as session:
        await session.execute(
            update(AdminSession).values(
                created_at=utcnow() - SESSION_MAX_AGE - timedelta(minutes=1)
            )
        )
    assert not await auth.session_is_live(cookie)
    assert await auth.start_session(ADMIN_KEY) is not None
    async with admin_api.runtime.db.transaction() as session:
        assert len((await session.scalars(select(AdminSession))).all()) == 1


async def test_each_login_and_key_has_its_own_rate_limit(tmp_path: Path) -> None:
    per_minute = 3
    async with running_api(
        tmp_path, admin_keys=ADMIN_KEY, admin_secret=SECRET, admin_requests_per_minute=per_minute
    ) as api:
        auth = _auth(api)
        busy, other = await auth.start_session(ADMIN_KEY), await auth.start_session(ADMIN_KEY)
        assert busy is not None and other is not None
        get = api.client.get
        as_busy = {"Cookie": f"{COOKIE}={busy}"}
        for _ in range(per_minute):
            assert (await get("/api/v1/admin/funnel", headers=as_busy)).status_code == 200
        # A stranger is refused as before, and spends nobody's budget.
        stranger = await get("/api/v1/admin/funnel", headers={"Cookie": f"{COOKIE}=forged"})
        assert stranger.status_code == 401

        limited = await get("/api/v1/admin/daily", headers=as_busy)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["cache-control"] == "no-store"
        assert limited.json() == {
            "detail": f"rate limit of {per_minute} requests a minute for this dashboard login "
            f"reached (admin limit); retry in {limited.headers['retry-after']} s"
        }
        # Every route counts, the CSV exports too.
        assert (await get("/api/v1/admin/leads.csv", headers=as_busy)).status_code == 429

        # Another login of the same key, and the key itself, are unaffected...
        as_other = {"Cookie": f"{COOKIE}={other}"}
        assert (await get("/api/v1/admin/funnel", headers=as_other)).status_code == 200
        with_key = {"X-API-Key": ADMIN_KEY}
        for _ in range(per_minute):
            assert (await get("/api/v1/admin/funnel", headers=with_key)).status_code == 200
        # ...and the key, presented by a script, has its one budget too.
        by_key = await get("/api/v1/admin/funnel", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert by_key.status_code == 429 and "for this admin key" in by_key.json()["detail"]
        assert (await get("/api/v1/admin/funnel", headers=as_other)).status_code == 200
        # The public chat API's own limit is not spent by the dashboard.
        assert (await api.client.post("/api/v1/sessions", headers=api.headers())).status_code == 201
