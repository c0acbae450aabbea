"""Classify what a vendor answered (or the exception a check raised) as a status, a reason and a message."""

from __future__ import annotations

import ssl
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from exporter.adapters.client import CertificateError, ConnectError, DNSError, InvalidURL
from exporter.adapters.http1 import InvalidRequest, PayloadError, ProtocolError
from exporter.adapters.transport import BodyTooLarge, Response, TooManyRedirects
from exporter.core.egress import Blocked
from exporter.core.model import (
    CredentialError,
    CredentialUnavailable,
    HealthResult,
    HealthStatus,
    InvalidConfig,
    Reason,
    make_result,
)

Failure = tuple[HealthStatus, Reason, str]


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" and "٣" are digits to str.isdigit(), not to float()
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_http(resp: Response, now: datetime, *, expected: frozenset[int] | None = None) -> HealthResult | None:
    """Classify by status code; None means the status is acceptable and the caller checks the body."""
    code = resp.status
    if expected and code in expected or not expected and 200 <= code < 300:
        return None
    if code == 429:
        retry = parse_retry_after(resp.headers.get("Retry-After"), now)
        return make_result(HealthStatus.DEGRADED, resp.latency_ms, now, "rate limited (HTTP 429)",
                           Reason.RATE_LIMITED, retry)
    if code in (401, 403):
        return refused(resp.latency_ms, now, f"(HTTP {code})")
    if code >= 500:  # a 503 may say when to come back (maintenance): honoured like a 429's
        retry = parse_retry_after(resp.headers.get("Retry-After"), now)
        return make_result(HealthStatus.UNREACHABLE, resp.latency_ms, now, f"server error (HTTP {code})",
                           Reason.HTTP_5XX, retry)
    return make_result(HealthStatus.DEGRADED, resp.latency_ms, now, f"unexpected status HTTP {code}",
                       Reason.HTTP_4XX if code >= 400 else Reason.BAD_RESPONSE)


def refused(latency_ms: float, now: datetime, why: str, reason: Reason = Reason.AUTH) -> HealthResult:
    """Credentials refused: degraded, with the family member the vendor's answer names (`auth` when it names
    none), so the alert, the backoff and the README's advice follow the cause."""
    return make_result(HealthStatus.DEGRADED, latency_ms, now, f"credentials rejected {why}", reason)


def with_retry_after(result: HealthResult, seconds: float | None) -> HealthResult:
    """The result, deferring the next check by `seconds` when the vendor said so another way than Retry-After."""
    if seconds is None or result.retry_after_s is not None:
        return result
    return replace(result, retry_after_s=max(0.0, seconds))


def healthy_or_slow(latency_ms: float, now: datetime, degraded_latency_ms: int) -> HealthResult:
    """Healthy, or degraded when the answer took longer than the integration's threshold."""
    if latency_ms > degraded_latency_ms:
        return make_result(HealthStatus.DEGRADED, latency_ms, now,
                           f"slow: {latency_ms / 1000:.1f} s > {degraded_latency_ms / 1000:.1f} s threshold",
                           Reason.SLOW)
    return make_result(HealthStatus.HEALTHY, latency_ms, now)


def bad_response(latency_ms: float, now: datetime, what: str) -> HealthResult:
    return make_result(HealthStatus.DEGRADED, latency_ms, now, f"unexpected response: {what}", Reason.BAD_RESPONSE)


def describe_exception(exc: BaseException) -> Failure:
    """Map an adapter's exception to a status, a bounded reason and a short human message (no secrets)."""
    match exc:
        case Blocked():  # refused by the egress policy before anything was sent; the message names the setting
            return HealthStatus.UNREACHABLE, Reason.BLOCKED, str(exc)
        case CredentialUnavailable():
            return (HealthStatus.DEGRADED, Reason.CREDENTIAL_UNAVAILABLE,
                    f"not checked: the credential store is unavailable ({exc})")
        case CredentialError():
            return HealthStatus.DEGRADED, Reason.AUTH, f"credential unavailable: {exc}"
        case InvalidConfig() | InvalidURL():
            return HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG, f"invalid configuration: {exc}"
        case DNSError():
            return HealthStatus.UNREACHABLE, Reason.DNS, f"DNS lookup failed for {exc.host}"
        case CertificateError():
            return HealthStatus.UNREACHABLE, Reason.TLS, f"TLS certificate rejected for {exc.host}"
        case ssl.SSLError():
            return HealthStatus.UNREACHABLE, Reason.TLS, "TLS handshake failed"
        case ConnectError():
            return HealthStatus.UNREACHABLE, Reason.CONNECT, f"cannot connect to {exc.host}:{exc.port}: {exc.why}"
        case PayloadError():
            return HealthStatus.UNREACHABLE, Reason.CONNECT, "the answer was cut off (connection closed mid-body)"
        case TimeoutError():  # before OSError, whose subclass it is
            return HealthStatus.UNREACHABLE, Reason.TIMEOUT, "timed out"
        case ConnectionError():
            return HealthStatus.UNREACHABLE, Reason.CONNECT, "connection closed or reset by the server"
        case TooManyRedirects():
            return HealthStatus.DEGRADED, Reason.BAD_RESPONSE, "too many redirects (redirect loop?)"
        case ProtocolError():
            # Not HTTP at all cannot carry a sync: unreachable, whatever answers on that port. The message
            # never quotes the bytes received.
            return HealthStatus.UNREACHABLE, Reason.BAD_RESPONSE, f"unexpected response: {exc}"
        case InvalidRequest():  # a header value with a line break: the integration's own settings
            return HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG, f"invalid configuration: {exc}"
        case BodyTooLarge() | ValueError():
            return HealthStatus.DEGRADED, Reason.BAD_RESPONSE, f"unexpected response: {exc}"
        case _:  # the text of an unforeseen exception may quote what the server sent: only its type leaves
            return HealthStatus.UNREACHABLE, Reason.ERROR, f"unexpected {type(exc).__name__} in the check"
