"""API keys compared in constant time (rate limits: ``core.ratelimit``)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def key_hash(key: str) -> str:
    """What the database stores for a key: enough to recognise it, useless to present."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """The configured keys. ``match`` compares the presented key with every configured key
    through fixed-length digests, so timing reveals neither which key nor how much matched."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(k.encode("utf-8")).digest() for k in keys if k]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def match(self, presented: str | None) -> str | None:
        """The hash of the matching key, or ``None``."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, digest)
        return digest.hex() if found else None


def presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer <key>``."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
