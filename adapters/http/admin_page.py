"""The sales dashboard's pages: ``GET /admin`` (the dashboard, for a logged-in admin), the login
form and logout. The page itself is static (HTML, CSS and JS from the package's static folder);
its panels read ``/api/v1/admin/...`` with the session cookie set here."""

from __future__ import annotations

import asyncio
import html
import time
from collections import deque
from importlib.resources.abc import Traversable
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from adapters.http.admin_auth import COOKIE, AdminAuth

# No inline script or style anywhere: the page's JS and CSS are files of this origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Guessing the key: each refusal waits, and an address refused this often in the window is
# turned away until the window has passed.
FAILURE_DELAY_SECONDS = 0.5
FAILURES_ALLOWED = 5
FAILURE_WINDOW_SECONDS = 300.0
_TRACKED_ADDRESSES = 10_000


class LoginGuard:
    """Failed logins per client address in a sliding window (in memory: per process)."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW_SECONDS):
        self.allowed = allowed
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds until this address may try again, or ``None`` when it may now."""
        now = time.monotonic()
        failures = self._recent(address, now)
        if len(failures) < self.allowed:
            return None
        return max(1, int(failures[0] + self.window - now) + 1)

    def failed(self, address: str) -> None:
        now = time.monotonic()
        if address not in self._failures and len(self._failures) >= _TRACKED_ADDRESSES:
            # Bounded memory: forget the address tracked longest.
            self._failures.pop(next(iter(self._failures)))
        failures = self._recent(address, now)
        failures.append(now)
        self._failures[address] = failures

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def _page(status: int, body: str) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=SECURITY_HEADERS)


def _auth(request: Request) -> AdminAuth:
    """The app's admin sessions (``app.state.admin_auth``); without admin keys there is none,
    and the dashboard is not there at all."""
    auth: AdminAuth | None = getattr(request.app.state, "admin_auth", None)
    if auth is None:
        raise HTTPException(404, "Not Found")
    return auth


def build_admin_page_router(static: Traversable) -> APIRouter:
    """The dashboard's pages, their HTML, CSS and JS read once from ``static``."""
    router = APIRouter(include_in_schema=False)
    dashboard = static.joinpath("admin.html").read_text("utf-8")
    login_form = static.joinpath("admin-login.html").read_text("utf-8")
    script = static.joinpath("admin.js").read_text("utf-8")
    style = static.joinpath("admin.css").read_text("utf-8")
    guard = LoginGuard()

    def login_page(status: int = 200, message: str = "") -> HTMLResponse:
        shown = f'<p class="refused" role="alert">{html.escape(message)}</p>' if message else ""
        return _page(status, login_form.replace("{{message}}", shown))

    async def session_of(request: Request) -> str | None:
        """The request's session cookie if it names a live session, else ``None``."""
        cookie = request.cookies.get(COOKIE)
        if cookie and await _auth(request).session_is_live(cookie):
            return cookie
        return None

    @router.get("/admin")
    async def dashboard_page(request: Request) -> Response:
        session = await session_of(request)
        if session is None:
            return _redirect("/admin/login")
        token = html.escape(_auth(request).csrf_token(session), quote=True)
        return _page(200, dashboard.replace("{{csrf}}", token))

    @router.get("/admin/admin.js")
    async def dashboard_script(request: Request) -> Response:
        # The script shows nothing by itself, but nothing of the dashboard is served to strangers.
        if await session_of(request) is None:
            return Response(status_code=401, headers=SECURITY_HEADERS)
        return Response(script, media_type="text/javascript", headers=SECURITY_HEADERS)

    @router.get("/admin/admin.css")
    async def dashboard_style(request: Request) -> Response:
        # Public (the login form wears it too), where there is a dashboard.
        _auth(request)
        return Response(style, media_type="text/css", headers=SECURITY_HEADERS)

    @router.get("/admin/login")
    async def login_get(request: Request) -> Response:
        if await session_of(request) is not None:
            return _redirect("/admin")
        return login_page()

    @router.post("/admin/login")
    async def login_post(request: Request, key: Annotated[str, Form()] = "") -> Response:
        admin = _auth(request)
        address = request.client.host if request.client else "unknown"
        wait = guard.retry_after(address)
        if wait is not None:
            limited = login_page(429, "Too many wrong keys. Wait a few minutes and try again.")
            limited.headers["Retry-After"] = str(wait)
            return limited
        cookie = await admin.start_session(key.strip()) if key.strip() else None
        if cookie is None:
            guard.failed(address)
            await asyncio.sleep(FAILURE_DELAY_SECONDS)
            return login_page(401, "That key is not an admin key. Check it and try again.")
        guard.succeeded(address)
        response = _redirect("/admin")
        response.set_cookie(
            COOKIE,
            cookie,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @router.post("/admin/logout")
    async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        session = await session_of(request)
        if session is None:
            return _redirect("/admin/login")
        admin = _auth(request)
        if not admin.check_csrf(session, csrf):
            return _page(403, "<!doctype html><title>Refused</title><p>Refused: a stale form.")
        await admin.end_session(session)
        response = _redirect("/admin/login")
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    return router
