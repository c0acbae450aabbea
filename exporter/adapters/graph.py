"""Microsoft Graph: when a Dynamics 365 app registration's client secret expires, asked at most daily.

GET {graph}/v1.0/applications(appId='{client_id}')?$select=passwordCredentials answers
`{"passwordCredentials": [{"keyId": …, "displayName": …, "hint": "Ab1", "endDateTime": "2027-05-01T00:00:00Z",
…}]}` when the app may read its own registration (Application.Read.All, or it owns itself); otherwise 403
Authorization_RequestDenied, which means "unknown", never a failure of the integration.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from exporter.adapters.base import AdapterContext
from exporter.adapters.transport import fetch
from exporter.core.model import parse_expiry

log = logging.getLogger(__name__)

GRAPH_URL = "https://graph.microsoft.com"
KNOWN_TTL_S = 86400.0  # an answer (an expiry, or Graph's "not allowed") holds for a day: it changes on rotation
RETRY_TTL_S = 3600.0  # a lookup that failed in passing (network, 5xx, throttled) is tried again in an hour
LOOKUP_TIMEOUT_S = 3.0  # the lookup rides on a check: it must leave that check's deadline alone
UNKNOWN_STATUSES = frozenset({403, 404})  # not allowed to read the registration, or it lives in another tenant


class LookupFailed(Exception):
    """The lookup failed in passing: keep what was known, try again after RETRY_TTL_S."""


def app_url(graph_url: str, client_id: str) -> str:
    """The application by its client id, only its password credentials (OData quotes doubled, then escaped)."""
    app_id = quote(client_id.replace("'", "''"), safe="")
    return f"{graph_url.rstrip('/')}/v1.0/applications(appId='{app_id}')?$select=passwordCredentials"


def secret_expiry(body: dict[str, Any] | None, secret: str) -> datetime | None:
    """The end of the password credential this secret is: the ones whose `hint` (its first three characters)
    matches, the latest of them if several do; when Graph gives no hints, the latest of all. None if none
    matches (the secret is not among them: the vendor will say so) or none has a readable end."""
    entries = [c for c in (body or {}).get("passwordCredentials") or [] if isinstance(c, dict)]
    hinted = [c for c in entries if isinstance(c.get("hint"), str) and c["hint"]]
    if hinted:
        entries = [c for c in hinted if secret.startswith(c["hint"])]
    ends = []
    for c in entries:
        try:
            ends.append(parse_expiry(str(c.get("endDateTime") or "")))
        except ValueError:
            continue
    return max(ends, default=None)


async def read_secret_expiry(ctx: AdapterContext, url: str, token: str, secret: str) -> datetime | None:
    """Ask Graph once. None: Graph will not say (403/404); LookupFailed: ask again later."""
    resp = await fetch(ctx, "GET", url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    if resp.status in UNKNOWN_STATUSES:
        return None
    if resp.status != 200:
        raise LookupFailed(f"HTTP {resp.status}")
    return secret_expiry(resp.json_object(), secret)


class SecretExpiryCache:
    """Graph's answer per app and secret for a day, so the lookup costs no request per check; a rotated
    secret (another keyed fingerprint) is looked up at its first check. A failed lookup keeps the last
    answer and tries again in an hour."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._now = monotonic
        self._key = os.urandom(32)
        self._answers: dict[Hashable, tuple[str, float, datetime | None]] = {}  # scope → (fingerprint, until, end)
        self.lookups = 0

    async def get(self, scope: Hashable, secret: str, lookup: Callable[[], Awaitable[datetime | None]]) -> datetime | None:
        fingerprint = hashlib.blake2b(secret.encode(), key=self._key, digest_size=16).hexdigest()
        cached = self._answers.get(scope)
        known = cached[2] if cached and cached[0] == fingerprint else None
        if cached and cached[0] == fingerprint and self._now() < cached[1]:
            return known
        self.lookups += 1
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                end = await lookup()
        except Exception as exc:  # the check's own result stands; only the expiry is not refreshed
            log.info("Microsoft Graph secret expiry lookup failed (%s); trying again in an hour", type(exc).__name__)
            self._answers[scope] = (fingerprint, self._now() + RETRY_TTL_S, known)
            return known
        self._answers[scope] = (fingerprint, self._now() + KNOWN_TTL_S, end)
        return end
