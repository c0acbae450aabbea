"""Webhook decisions, pure: which subscription URLs are acceptable, the signature, the retry schedule.

A subscription URL is tenant input and a destination: it obeys the egress policy like any integration URL
(no loopback, private, link-local or metadata address unless the operator allowed it), https only unless
the operator allowed the host, and no user-info (a secret has no place in a URL we store and show).
The transport checks the resolved addresses again on every connection.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tenacity import RetryCallState, wait_exponential

from exporter.core.egress import EgressPolicy

MAX_URL_CHARS = 2048
SIGNATURE_HEADER = "X-Integration-Health-Signature"
ID_HEADER = "Webhook-Id"
TIMESTAMP_HEADER = "Webhook-Timestamp"
SECRET_PREFIX = "whsec_"


class BadWebhookUrl(ValueError):
    """A subscription URL that is refused; the message says why without echoing the URL (it may be a capability)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a webhook goes, from its URL: what the egress policy judges."""

    scheme: str
    host: str
    port: int


def destination(url: str, policy: EgressPolicy) -> Destination:
    """Parse and judge a subscription URL before any DNS: shape, scheme and IP literals; BadWebhookUrl if refused.

    The addresses a name resolves to are judged by the caller (the API, after DNS) and by the check client.
    """
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
        raise BadWebhookUrl(f"url must be 1 to {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise BadWebhookUrl("url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadWebhookUrl("url is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadWebhookUrl("url must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise BadWebhookUrl("user-info (user:password@) is not allowed in a webhook URL: deliveries are signed instead")
    if parts.fragment:
        raise BadWebhookUrl("url must not have a #fragment (it is never sent)")
    host = parts.hostname
    if parts.scheme == "http" and not policy.allows_name(host):
        raise BadWebhookUrl("url must be https:// (http:// only to hosts allowed in EXPORTER_EGRESS_ALLOW)")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        policy.check_host(host, port)
    except Exception as exc:  # egress.Blocked: the refusal names the host and the range, never the path
        raise BadWebhookUrl(str(exc)) from None
    return Destination(parts.scheme, host, port)


def new_secret() -> str:
    """A signing secret: 32 random bytes, URL-safe, with a prefix that makes a leaked one easy to recognise."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

    The timestamp is signed with the body, so a receiver that refuses old timestamps refuses replays."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Exponential backoff between attempts (tenacity's wait), up to `max_attempts`, then the dead letter."""

    max_attempts: int = 12
    min_s: float = 30.0
    max_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.min_s <= 0 or self.max_s < self.min_s:
            raise ValueError("max_attempts must be >= 1 and 0 < min_s <= max_s")

    def gives_up_after(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def delay_s(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds before the next attempt after `attempts` failed ones: min × 2^(n-1), capped, +0–10 % jitter
        so receivers that failed together are not retried together."""
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempts)
        base = wait_exponential(multiplier=self.min_s, max=self.max_s)(state)
        return min(self.max_s, base * (1 + 0.1 * rng()))


def delivered(status: int) -> bool:
    """A 2xx answer is a delivery; anything else (3xx too: redirects are not followed) is tried again."""
    return 200 <= status < 300
