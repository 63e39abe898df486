"""The dashboard's login across processes: two real ``esoteric serve`` processes on one Postgres
database, with the same admin keys and secret, as behind a load balancer. A login on one process
is honoured by the other, a logout on one is refused by both (the ``admin_sessions`` row, not a
process's memory, decides), and a forged or tampered cookie is refused by both. No Redis: the
database alone carries the sessions."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from adapters.http.admin_auth import COOKIE
from core.store.database import Database
from tests.support.cluster import Cluster, inherited_env

ADMIN_KEY = "admin-key-0123456789abcdef-processes"
ADMIN_SECRET = "p" * 48
API_KEY = "processes-key-0123456789abcdef"
FUNNEL = "/api/v1/admin/funnel?days=1"
SALT = "esoteric.admin.session"  # the cookie signer's, in adapters/http/admin_auth.py
REFUSED = {"detail": "admin key or dashboard login required"}
_CSRF = re.compile(r'<input type="hidden" name="csrf" value="([0-9a-f]{64})">')

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
]


@pytest.fixture
async def two_processes(
    tmp_path: Path, postgres_url: str, migrated: Database
) -> AsyncIterator[Cluster]:
    env = inherited_env()
    env.update(
        DATABASE_URL=postgres_url,
        ESOTERIC_API_KEYS=API_KEY,
        ESOTERIC_ADMIN_KEYS=ADMIN_KEY,
        ESOTERIC_ADMIN_SECRET=ADMIN_SECRET,
        ESOTERIC_EMBEDDING_MODEL_DIR="/nonexistent/embedding-model",
        ESOTERIC_LOG_FORMAT="json",
    )
    cluster = Cluster(tmp_path, env, size=2)
    try:
        await cluster.start_all()
        yield cluster
    finally:
        await cluster.stop_all()
    for node in cluster.nodes:
        assert node.process is not None and node.process.returncode == 0, cluster.log(node.index)


def _client(base_url: str) -> httpx.AsyncClient:
    # Cookies are handed over explicitly: a browser's jar would hide which cookie went where.
    return httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=10.0)


async def _funnel(client: httpx.AsyncClient, cookie: str) -> httpx.Response:
    client.cookies.clear()
    return await client.get(FUNNEL, headers={"Cookie": f"{COOKIE}={cookie}"})


async def _dashboard(client: httpx.AsyncClient, cookie: str) -> httpx.Response:
    client.cookies.clear()
    return await client.get("/admin", headers={"Cookie": f"{COOKIE}={cookie}"})


async def _log_in(client: httpx.AsyncClient) -> tuple[str, str]:
    """Logs in through the form as a browser would: the cookie set, and the CSRF token the
    dashboard page it redirects to carries in its logout form."""
    form = await client.get("/admin/login")
    assert form.status_code == 200 and 'name="key"' in form.text
    response = await client.post("/admin/login", data={"key": ADMIN_KEY})
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    cookie = response.cookies.get(COOKIE)
    assert cookie, response.headers
    page = await _dashboard(client, cookie)
    assert page.status_code == 200
    match = _CSRF.search(page.text)
    assert match is not None, page.text[:500]
    return cookie, match.group(1)


def _forgeries(cookie: str) -> list[str]:
    """Cookies a stranger could present, made from a genuine one."""
    signer = URLSafeTimedSerializer(ADMIN_SECRET, salt=SALT)
    session_id = signer.loads(cookie)
    assert isinstance(session_id, str)
    # One character of the genuine cookie changed, in its payload and in its signature (the
    # signature's last character to one differing in its significant bits, not its padding).
    first = "B" if cookie[0] == "A" else "A"
    last = "A" if cookie[-1] == "w" else "w"
    return [
        # The live session's id, signed with a secret other than the processes' own.
        URLSafeTimedSerializer("q" * 48, salt=SALT).dumps(session_id),
        first + cookie[1:],
        cookie[:-1] + last,
        session_id,  # the bare id, unsigned
        # A genuine signature over an id that is no session: the row decides, not the
        # signature alone.
        signer.dumps("no-such-session"),
    ]


async def test_a_login_and_its_logout_hold_in_every_process(two_processes: Cluster) -> None:
    a_url, b_url = (node.url for node in two_processes.nodes)
    async with _client(a_url) as a, _client(b_url) as b:
        cookie, csrf = await _log_in(a)

        # B never saw the login: the session row is enough.
        on_b = await _funnel(b, cookie)
        assert on_b.status_code == 200, on_b.text
        assert on_b.json()["steps"][0]["step"] == "conversations"
        page_on_b = await _dashboard(b, cookie)
        assert page_on_b.status_code == 200 and csrf in page_on_b.text

        for client in (a, b):
            for forged in _forgeries(cookie):
                response = await _funnel(client, forged)
                assert response.status_code == 401, (client.base_url, forged)
                assert response.json() == REFUSED
                page = await _dashboard(client, forged)
                assert page.status_code == 303, (client.base_url, forged)
            # The forgeries revoked nothing: the genuine cookie still works.
            assert (await _funnel(client, cookie)).status_code == 200

        a.cookies.clear()
        out = await a.post(
            "/admin/logout", data={"csrf": csrf}, headers={"Cookie": f"{COOKIE}={cookie}"}
        )
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"

        # Refused by the process that did not log it out, and by the one that did.
        for client in (b, a):
            replayed = await _funnel(client, cookie)
            assert replayed.status_code == 401 and replayed.json() == REFUSED
            page = await _dashboard(client, cookie)
            assert page.status_code == 303 and page.headers["location"] == "/admin/login"
