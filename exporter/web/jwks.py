"""The app's public signing keys (a JWKS, e.g. Supabase's /auth/v1/.well-known/jwks.json), fetched with
aiohttp and cached by key id.

A key id not in the cache triggers a refresh (a key was rotated in), but at most one fetch runs at a time
and at most one starts per `min_refresh_s`: tokens with made-up key ids cannot hammer the endpoint. Keys
older than `max_age_s` are fetched again on next use, so a key removed from the set stops working. When a
fetch fails the keys fetched before stay in use; with none ever fetched, `key` raises JwksUnavailable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import jwt

log = logging.getLogger(__name__)

ALGORITHMS = frozenset({"RS256", "ES256"})  # asymmetric only: a JWKS never verifies an HS* token
MAX_JWKS_BYTES = 256 * 1024


class JwksUnavailable(Exception):
    """No key set has been fetched yet, and fetching one failed."""


class JwksFetchError(Exception):
    """The JWKS endpoint did not answer with a key set; the message says how."""


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS by key id: RS256 or ES256 keys with a `kid`; others are skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwksFetchError("the answer is not a JWKS (a JSON object with a `keys` list)")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or entry.get("use", "sig") != "sig" or entry.get("kty") not in ("RSA", "EC"):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        try:
            key = jwt.PyJWK(dict(entry))
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in ALGORITHMS:
            keys[kid] = key
    return keys


class JwksCache:
    """Signing keys by key id from `url`; `clock` (monotonic seconds) is a parameter so tests can move time."""

    def __init__(self, url: str, *, min_refresh_s: float = 30.0, max_age_s: float = 600.0, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if min_refresh_s <= 0 or max_age_s < min_refresh_s:
            raise ValueError("JwksCache needs 0 < min_refresh_s <= max_age_s")
        self.url = url
        self.min_refresh_s, self.max_age_s, self.timeout_s = min_refresh_s, max_age_s, timeout_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = 0.0  # of the keys in hand
        self._attempted_at: float | None = None  # the last fetch, whatever came of it
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key with this id, fetching the set first when it is unknown or old (rate-limited); None: no such key."""
        if not self._usable(kid):
            async with self._lock:  # one fetch at a time; who waited finds the set fresh and fetches nothing
                if not self._usable(kid) and self._may_fetch():
                    await self._refresh()
        if self._keys is None:
            raise JwksUnavailable(f"no signing keys could be fetched from {self.url}")
        return self._keys.get(kid)

    def _usable(self, kid: str) -> bool:
        return self._keys is not None and kid in self._keys and self._clock() - self._fetched_at < self.max_age_s

    def _may_fetch(self) -> bool:
        return self._attempted_at is None or self._clock() - self._attempted_at >= self.min_refresh_s

    async def _refresh(self) -> None:
        self._attempted_at = self._clock()
        try:
            keys = parse_jwks(await self._fetch())
        except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError, JwksFetchError) as exc:
            kept = f"keeping the {len(self._keys)} keys fetched before" if self._keys is not None else "no keys yet"
            log.warning("fetching the JWKS from %s failed (%s); %s", self.url, str(exc) or type(exc).__name__, kept)
            return
        if not keys:
            log.warning("the JWKS at %s holds no usable RS256/ES256 signing key with a kid", self.url)
        self._keys, self._fetched_at = keys, self._attempted_at
        log.info("fetched %d signing keys from %s", len(keys), self.url)

    async def _fetch(self) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        async with self._session.get(self.url, allow_redirects=False, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise JwksFetchError(f"HTTP {resp.status}" + (" (redirects are not followed: configure the final "
                                                              "URL)" if 300 <= resp.status < 400 else ""))
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksFetchError(f"the answer is over {MAX_JWKS_BYTES // 1024} KiB")
        return json.loads(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
