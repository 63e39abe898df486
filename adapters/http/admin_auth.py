"""Who may see the sales dashboard: a key from ``ESOTERIC_ADMIN_KEYS`` presented as ``X-API-Key``
or ``Authorization: Bearer``, or the dashboard's session cookie.

The cookie holds only a session id, signed with ``ESOTERIC_ADMIN_SECRET`` (so it cannot be
forged); the session itself is a row in ``admin_sessions`` (so logout revokes it everywhere and a
replayed cookie is refused, in every process). A session also ends when it is older than
``SESSION_MAX_AGE`` or when the key that opened it is no longer configured. Forms posted by the
dashboard carry a CSRF token derived from the session (an HMAC), checked with ``check_csrf``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from fastapi import HTTPException, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, select, update

from core.messages import utcnow
from core.store.database import Database
from core.store.models import AdminSession

from .security import ApiKeys, key_hash, presented_key

COOKIE = "esoteric_admin"
SESSION_MAX_AGE = timedelta(hours=12)
_SALT = "esoteric.admin.session"
REFUSED = "admin key or dashboard login required"


@dataclass(frozen=True)
class Admin:
    """An admin request's caller: the fingerprint of its key, and its session id if it came
    with the dashboard's cookie rather than a key."""

    key_fingerprint: str
    session_id: str | None = None


class AdminAuth:
    def __init__(self, db: Database, keys: Iterable[str], secret: str) -> None:
        if not secret:
            raise ValueError("the admin secret must not be empty")
        self.db = db
        keys = [k for k in keys if k]
        self.keys = ApiKeys(keys)
        self._fingerprints = [key_hash(k) for k in keys]
        self._secret = secret.encode("utf-8")
        self._signer = URLSafeTimedSerializer(secret, salt=_SALT)

    # -- keys ------------------------------------------------------------------------------

    def match_key(self, key: str | None) -> str | None:
        """The fingerprint of ``key`` if it is an admin key (compared in constant time)."""
        return self.keys.match(key)

    # -- sessions --------------------------------------------------------------------------

    async def start_session(self, key: str) -> str | None:
        """A new session for an admin key: the signed cookie value, or ``None`` for a key
        that is not an admin key."""
        fingerprint = self.match_key(key)
        if fingerprint is None:
            return None
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        async with self.db.transaction() as session:
            # Sessions past their age are refused anyway: forgotten at the next login.
            await session.execute(
                delete(AdminSession).where(AdminSession.created_at < now - SESSION_MAX_AGE)
            )
            session.add(AdminSession(id=session_id, key_fingerprint=fingerprint, created_at=now))
        return self._signer.dumps(session_id)

    def _session_id(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            value = self._signer.loads(cookie, max_age=int(SESSION_MAX_AGE.total_seconds()))
        except BadSignature:  # also an expired signature
            return None
        return value if isinstance(value, str) else None

    async def session(self, cookie: str | None) -> Admin | None:
        """The admin behind a cookie, if it is genuine, unexpired, not revoked, and its key
        is still configured."""
        session_id = self._session_id(cookie)
        if session_id is None:
            return None
        async with self.db.transaction() as session:
            row = (
                await session.execute(
                    select(AdminSession.key_fingerprint, AdminSession.created_at).where(
                        AdminSession.id == session_id, AdminSession.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None or row.created_at + SESSION_MAX_AGE < utcnow():
            return None
        if not self._key_still_configured(row.key_fingerprint):
            return None
        return Admin(row.key_fingerprint, session_id)

    def _key_still_configured(self, fingerprint: str) -> bool:
        found = False
        for known in self._fingerprints:
            found |= hmac.compare_digest(known, fingerprint)
        return found

    async def session_is_live(self, cookie: str | None) -> bool:
        return await self.session(cookie) is not None

    async def end_session(self, cookie: str | None) -> None:
        """Log out: the session is revoked, so the same cookie is refused from now on."""
        session_id = self._session_id(cookie)
        if session_id is None:
            return
        async with self.db.transaction() as session:
            await session.execute(
                update(AdminSession)
                .where(AdminSession.id == session_id, AdminSession.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )

    # -- CSRF ------------------------------------------------------------------------------

    def csrf_token(self, cookie: str) -> str:
        """The token the dashboard's forms carry: an HMAC of the session id, so it is valid
        for this session only and needs no storage."""
        session_id = self._session_id(cookie) or ""
        return hmac.new(self._secret, f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, cookie: str, token: str | None) -> bool:
        if not token or self._session_id(cookie) is None:
            return False
        return hmac.compare_digest(self.csrf_token(cookie), token)


def _refused() -> HTTPException:
    return HTTPException(401, REFUSED, headers={"WWW-Authenticate": "Bearer"})


async def require_admin(request: Request) -> Admin:
    """FastAPI dependency: the admin key (``X-API-Key`` or Bearer) or a live session cookie;
    401 otherwise, saying nothing about which part failed."""
    auth: AdminAuth | None = getattr(request.app.state, "admin_auth", None)
    if auth is None:
        raise _refused()
    key = presented_key(request.headers.get("x-api-key"), request.headers.get("authorization"))
    if key is not None:
        fingerprint = auth.match_key(key)
        if fingerprint is None:
            raise _refused()
        return Admin(fingerprint)
    admin = await auth.session(request.cookies.get(COOKIE))
    if admin is None:
        raise _refused()
    return admin
