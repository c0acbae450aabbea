"""A per-process cache of short-lived access tokens (OAuth, session tokens), so a check costs one request.

A token is cached per scope (the organisation, its credential reference and the vendor URLs it was issued
for) and is valid only for the secret it was obtained with: its entry holds a keyed hash of that secret,
so another organisation, another reference or a rotated secret never reuses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable, Hashable

from exporter.adapters.transport import Response
from exporter.core.model import HealthResult

REFRESH_MARGIN_S = 300.0  # renew this long before expiry, so a token never dies mid-request


class TokenFailure(Exception):
    """Getting a token failed; `result` is the classified outcome the check reports."""

    def __init__(self, result: HealthResult) -> None:
        super().__init__(result.error)
        self.result = result


class TokenCache:
    """Tokens by scope and secret until shortly before they expire; one fetch at a time per scope."""

    def __init__(self, monotonic: Callable[[], float], margin_s: float = REFRESH_MARGIN_S) -> None:
        self._now, self._margin = monotonic, margin_s
        self._key = os.urandom(32)  # the fingerprints mean nothing outside this process
        self._tokens: dict[Hashable, tuple[str, str, float]] = {}  # scope → (fingerprint, token, renew at)
        self._locks: dict[Hashable, list] = {}  # scope → [its lock, callers holding or awaiting it], while any
        self.fetches = 0

    def fingerprint(self, secret: str) -> str:
        """A keyed hash of the secret: what the cache compares, never the secret itself."""
        return hashlib.blake2b(secret.encode(), key=self._key, digest_size=16).hexdigest()

    async def get(self, scope: Hashable, secret: str, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        """Return a valid token for `scope` obtained with `secret`, calling `fetch` (→ token, lifetime in
        seconds) when there is none, it is about to expire, or it was obtained with another secret."""
        fingerprint = self.fingerprint(secret)
        if (token := self._valid(scope, fingerprint)) is not None:  # the usual case: no lock, nothing kept
            return token
        entry = self._locks.setdefault(scope, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                if (token := self._valid(scope, fingerprint)) is not None:  # fetched while this one waited
                    return token
                self._tokens.pop(scope, None)  # a rotated secret's token is not kept for later
                token, lifetime = await fetch()
                self.fetches += 1
                self._tokens[scope] = (fingerprint, token, self._now() + max(0.0, lifetime - self._margin))
                return token
        finally:  # a lock per scope only while a fetch is on: at 100,000 integrations they were 40,000 kept
            entry[1] -= 1
            if not entry[1]:
                del self._locks[scope]

    def _valid(self, scope: Hashable, fingerprint: str) -> str | None:
        cached = self._tokens.get(scope)
        return cached[1] if cached and cached[0] == fingerprint and self._now() < cached[2] else None

    def drop(self, scope: Hashable) -> None:
        """Forget a token the server refused (401/403), so the next check fetches a fresh one."""
        self._tokens.pop(scope, None)


async def with_token(cache: TokenCache, scope: Hashable, secret: str,
                     fetch: Callable[[], Awaitable[tuple[str, float]]],
                     request: Callable[[str], Awaitable[Response]]) -> Response:
    """Send `request` with a token for `scope`. A cached token refused (401: it ended early, or the vendor
    forgot it) is replaced once and the request sent again, so the answer is about the credentials, not
    about a stale token; a token fetched for this very request is not fetched twice. Raises TokenFailure."""
    fetched: list[bool] = []

    async def fetch_noting() -> tuple[str, float]:
        fetched.append(True)
        return await fetch()

    while True:
        resp = await request(await cache.get(scope, secret, fetch_noting))
        if resp.status in (401, 403):
            cache.drop(scope)
        if resp.status != 401 or fetched:
            return resp
