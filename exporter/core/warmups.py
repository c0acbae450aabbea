"""Warm-ups before scheduled syncs, pure: which URL, when to send, what the answer means.

A sync function that has gone cold (a Supabase Edge Function, a serverless endpoint) can take seconds
to boot, and a scheduled sync that hits a cold start may start late or time out. The monitor asks the
function once, shortly before each scheduled sync, so the sync finds it warm — and measures the first
answer, so cold starts are counted instead of guessed. The engine's loop (engine/warmups.py) acts on
these decisions; the schedule's DST rules are SyncSchedule's (core/syncs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from exporter.core.egress import Blocked, EgressPolicy, host_name
from exporter.core.syncs import SyncSchedule

MAX_URL_CHARS = 2048  # as the column's CHECK: a URL, not a place to store a document
MIN_GAP_S = 300  # one integration is warmed at most every 5 minutes: a function called more often is warm
FAILING_AFTER = 3  # warm-ups failed in a row before a warning (log, and IntegrationSyncWarmupFailing)
WARMUP_HEADER = "X-Integration-Health-Warmup"  # lets the function answer at once instead of syncing


class WarmupOutcome(StrEnum):
    """What one warm-up came to: a small fixed set, so it is safe as a metric label."""

    WARM = "warm"  # answered (< 400) within the cold-start threshold
    COLD_START = "cold_start"  # answered (< 400), slower than the threshold: the function was cold
    HTTP_ERROR = "http_error"  # answered 4xx/5xx: the endpoint is wrong, refuses us, or failed to boot
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # DNS, connection, TLS
    BLOCKED = "blocked"  # the egress policy refused the destination; nothing was sent
    INVALID_CONFIG = "invalid_config"  # the row's warm-up URL does not validate; nothing was sent

    @property
    def failed(self) -> bool:
        return self not in (WarmupOutcome.WARM, WarmupOutcome.COLD_START)


def parse_warmup_url(value: object) -> str:
    """The row's warm-up URL, validated (it is tenant input), or ValueError saying what is wrong.

    http(s) with a host, at most MAX_URL_CHARS, no user-info (a secret belongs in the vault), no control
    characters or spaces. Whether plain http may be sent is the egress policy's call (check_destination).
    """
    if not isinstance(value, str):
        raise ValueError("sync_warmup_url must be a string")
    if len(value) > MAX_URL_CHARS:
        raise ValueError(f"sync_warmup_url is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("sync_warmup_url contains spaces or control characters")
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 — raises ValueError for a port out of range
    except ValueError:
        raise ValueError("sync_warmup_url is not a valid URL") from None
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValueError("sync_warmup_url must be an https:// URL with a host")
    if url.username is not None or url.password is not None:
        raise ValueError("user-info (user:password@) is not allowed in sync_warmup_url")
    return value


def check_destination(url: str, policy: EgressPolicy) -> None:
    """Raise Blocked unless the URL may be sent: https, or http to a host the operator allowed by name or
    network (an in-cluster function). The check client then judges every address as for any tenant URL."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not policy.allows_name(parts.hostname or ""):
        raise Blocked(f"destination http://{host_name(parts.hostname or '')} is not allowed (https only); "
                      "an operator can allow it with EXPORTER_EGRESS_ALLOW")


@dataclass(frozen=True, slots=True)
class Warmup:
    """One planned warm-up: when to send it, and the scheduled sync it prepares."""

    at: datetime
    sync_at: datetime


def next_warmup(schedule: SyncSchedule, now: datetime, lead_s: float, warmed: datetime | None = None,
                min_gap_s: float = MIN_GAP_S) -> Warmup:
    """The next warm-up at `now`: for the first sync after `now` not yet warmed, `lead_s` before it.

    `warmed` is the sync the last warm-up prepared: that one is not warmed again, nor one sooner than
    `min_gap_s` after it. When the moment has passed but the sync has not (a start-up, a late loop) the
    warm-up is due now: still before the sync, still useful. Times are UTC; the schedule's time zone
    and its DST changes are SyncSchedule.next's business.
    """
    after = now
    if warmed is not None:
        after = max(now, warmed, warmed + timedelta(seconds=min_gap_s) - timedelta(microseconds=1))
    sync_at = schedule.next(after)
    return Warmup(at=max(now, sync_at - timedelta(seconds=lead_s)), sync_at=sync_at)


def classify(status: int, latency_s: float, cold_start_s: float) -> WarmupOutcome:
    """An answer's outcome: a slow first answer (< 400) is a cold start; an error answer is a failure."""
    if status >= 400:
        return WarmupOutcome.HTTP_ERROR
    return WarmupOutcome.COLD_START if latency_s > cold_start_s else WarmupOutcome.WARM


@dataclass(frozen=True, slots=True)
class WarmupRecord:
    """The latest warm-up of one integration, as /metrics shows it."""

    at: datetime
    sync_at: datetime
    outcome: WarmupOutcome
    latency_s: float | None  # None when nothing answered
    consecutive_failures: int


def record(previous: WarmupRecord | None, at: datetime, sync_at: datetime, outcome: WarmupOutcome,
           latency_s: float | None) -> WarmupRecord:
    """The record after a warm-up: failures count up in a row; any answer < 400 ends the streak."""
    failures = (previous.consecutive_failures if previous else 0) + 1 if outcome.failed else 0
    return WarmupRecord(at, sync_at, outcome, latency_s, failures)
