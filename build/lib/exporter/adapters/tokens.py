"""A per-process cache of short-lived access tokens (OAuth, session tokens), so a check costs one request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

from exporter.core.model import HealthResult

REFRESH_MARGIN_S = 300.0  # renew this long before expiry, so a token never dies mid-request


class TokenFailure(Exception):
    """Getting a token failed; `result` is the classified outcome the check reports."""

    def __init__(self, result: HealthResult) -> None:
        super().__init__(result.error)
        self.result = result


class TokenCache:
    """Tokens by key until shortly before they expire; one fetch at a time per key (no stampede)."""

    def __init__(self, monotonic: Callable[[], float], margin_s: float = REFRESH_MARGIN_S) -> None:
        self._now, self._margin = monotonic, margin_s
        self._tokens: dict[Hashable, tuple[str, float]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self.fetches = 0

    async def get(self, key: Hashable, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        """Return a valid token for `key`, calling `fetch` (→ token, lifetime in seconds) when needed."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            cached = self._tokens.get(key)
            if cached and self._now() < cached[1]:
                return cached[0]
            token, lifetime = await fetch()
            self.fetches += 1
            self._tokens[key] = (token, self._now() + max(0.0, lifetime - self._margin))
            return token

    def drop(self, key: Hashable) -> None:
        """Forget a token the server refused, so the next check fetches a fresh one."""
        self._tokens.pop(key, None)
