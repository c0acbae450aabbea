"""Scheduling decisions, pure: slots, what is due, backoff, active or passive, what a restart assumes."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from tenacity import RetryCallState, wait_exponential

from exporter.core.model import (
    AUTH_REASONS,
    CheckState,
    HealthResult,
    HealthStatus,
    Integration,
    IntegrationResult,
    Reason,
)

MAX_INTERVAL_S = 7 * 86400  # as IntegrationConfigBase.check_interval_seconds allows
MIN_INTERVAL_S = 900  # shorter intervals spend vendor API quota; refused unless explicitly allowed
BACKOFF_CAP_S = 4 * 3600  # throttled, out of quota, credentials refused: asking again spends quota for nothing
UNREACHABLE_BACKOFF_CAP_S = 3600  # network, timeout, 5xx: a failed request spends no quota; see the vendor return
MAX_RETRY_AFTER_S = 24 * 3600  # a vendor's Retry-After is honoured up to a day, never longer
FAILURE_REASONS = frozenset({Reason.RATE_LIMITED, Reason.QUOTA}) | AUTH_REASONS  # degraded, but back off too


@dataclass(frozen=True, slots=True)
class BackoffCaps:
    """The longest deferral by cause (EXPORTER_BACKOFF_MAX_SECONDS, EXPORTER_BACKOFF_UNREACHABLE_MAX_SECONDS)."""

    refused_s: int = BACKOFF_CAP_S
    unreachable_s: int = UNREACHABLE_BACKOFF_CAP_S

    def __post_init__(self) -> None:
        if self.refused_s < 0 or self.unreachable_s < 0:
            raise ValueError("backoff caps must be >= 0 seconds")

    def for_result(self, result: HealthResult) -> int:
        """Refused (throttled, quota, credentials) backs off long; unreachable short, to see the vendor return."""
        return self.refused_s if result.reason in FAILURE_REASONS else self.unreachable_s


DEFAULT_BACKOFF = BackoffCaps()


def slot_start(now: datetime, interval_s: int) -> datetime:
    """The start of the wall-clock-aligned slot containing `now` (slots at :00, :15, :30, :45 for 900 s)."""
    ts = now.timestamp()
    return datetime.fromtimestamp(ts - ts % interval_s, UTC)


def next_slot(now: datetime, interval_s: int) -> datetime:
    return slot_start(now, interval_s) + timedelta(seconds=interval_s)


def validate_interval(interval_s: int, allow_fast: bool) -> None:
    """Refuse intervals that divide no day evenly or that would burn vendor quota."""
    if interval_s <= 0 or 86400 % interval_s:
        raise ValueError(f"check interval {interval_s} s must divide a day evenly (e.g. 300, 900, 1800, 3600)")
    if interval_s < MIN_INTERVAL_S and not allow_fast:
        raise ValueError(f"check interval {interval_s} s is below {MIN_INTERVAL_S} s, and every check costs "
                         "vendor API quota; set EXPORTER_ALLOW_FAST_INTERVAL=true to allow it (demo, tests)")


def interval_for(integration: Integration, base_s: int, type_intervals: Mapping[str, int]) -> int:
    """The integration's own interval: its config, else its type's default, else the base; a multiple of base."""
    config = integration.config if isinstance(integration.config, dict) else {}
    wanted = config.get("check_interval_seconds") or type_intervals.get(integration.integration_type) or base_s
    try:
        wanted = int(wanted)
    except (TypeError, ValueError, OverflowError):
        wanted = base_s  # the runner reports the invalid config; scheduling falls back to the base
    if not 0 < wanted <= MAX_INTERVAL_S:  # what the config model refuses must still reach the runner to be reported
        wanted = base_s
    return max(base_s, math.ceil(wanted / base_s) * base_s)


def is_due(slot: datetime, interval_s: int, state: CheckState | None) -> bool:
    """Due when the slot falls on the integration's interval and no deferral reaches past the slot."""
    if int(slot.timestamp()) % interval_s:
        return False
    return state is None or state.next_check_at is None or state.next_check_at <= slot


def due(integrations: Iterable[Integration], slot: datetime, base_s: int, type_intervals: Mapping[str, int],
        states: Mapping[tuple, CheckState]) -> list[Integration]:
    """The integrations to check in `slot`."""
    return [i for i in integrations
            if is_due(slot, interval_for(i, base_s, type_intervals), states.get((i.org_id, i.integration_type)))]


def not_checked(result: HealthResult) -> bool:
    """The check could not be made for an infrastructure reason (the credential store): it says nothing about
    the vendor, so it must not replace the last result, count, reset or page anyone."""
    return result.reason == Reason.CREDENTIAL_UNAVAILABLE


def counts_as_failure(result: HealthResult) -> bool:
    """Unreachable, or refused in a way a retry soon would not fix (throttled, out of quota, bad credentials)."""
    return result.status == HealthStatus.UNREACHABLE or result.reason in FAILURE_REASONS


def backoff_s(failures: int, interval_s: int, cap_s: int = BACKOFF_CAP_S,
              rng: Callable[[], float] = random.random) -> int:
    """Delay before the next check after `failures` consecutive failures, in whole slots.

    interval × 2^(n-1) (tenacity's exponential wait: 15 min → 30 → 60 → … up to `cap_s`, which depends on
    the cause: see BackoffCaps), plus jitter of up to a quarter of that, rounded down to whole slots:
    checks only run on slot boundaries, so sub-slot jitter would just round up and skew the progression;
    whole-slot jitter spreads a fleet that failed together without delaying the first retries.
    """
    if failures <= 0:
        return 0
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = failures
    base = wait_exponential(multiplier=interval_s, max=cap_s)(state)
    jitter_slots = int(base * 0.25 * rng() // interval_s)
    return int(min(cap_s, base + jitter_slots * interval_s))


def after_check(previous: CheckState | None, result: HealthResult, slot: datetime, interval_s: int,
                rng: Callable[[], float] = random.random, caps: BackoffCaps = DEFAULT_BACKOFF) -> CheckState:
    """The state after a check: a success resets; a failure counts and defers, capped by its cause, never
    sooner than Retry-After.

    `next_check_at` is always the first slot on the integration's own interval at or after the delay.
    """
    previous = previous or CheckState()
    if not_checked(result):  # no vendor was asked: neither a failure nor a success
        return replace(previous, next_check_at=next_slot(slot, interval_s))
    throttled = result.reason in (Reason.RATE_LIMITED, Reason.QUOTA)
    streak = previous.rate_limited_streak + 1 if throttled else 0
    if not counts_as_failure(result):
        return CheckState(0, next_slot(slot, interval_s), streak, previous.passive_until)
    failures = previous.consecutive_failures + 1
    cap = caps.for_result(result)
    retry_after = _retry_after_s(result) if result.reason in FAILURE_REASONS else min(_retry_after_s(result), cap)
    delay = max(backoff_s(failures, interval_s, cap, rng), retry_after)  # a 503's Retry-After obeys the 1-h cap
    next_at = max(next_slot(slot, interval_s), _ceil_slot(slot + timedelta(seconds=delay), interval_s))
    return CheckState(failures, next_at, streak, previous.passive_until)


def _retry_after_s(result: HealthResult) -> float:
    return min(result.retry_after_s or 0, MAX_RETRY_AFTER_S)


def after_evidence(state: CheckState, last: HealthResult, success_at: datetime | None, slot: datetime,
                   interval_s: int) -> CheckState:
    """A success seen elsewhere after the last failed check (a sync run) ends the backoff: due in `slot`.

    The vendor demonstrably answers again, so waiting out the deferral would only hide the recovery;
    a Retry-After the vendor sent with the failure is still honoured.
    """
    if (state.consecutive_failures == 0 or success_at is None or success_at <= last.checked_at
            or state.next_check_at is None or state.next_check_at <= slot):
        return state
    retry_until = last.checked_at + timedelta(seconds=_retry_after_s(last))
    return replace(state, next_check_at=min(state.next_check_at, max(slot, _ceil_slot(retry_until, interval_s))))


def _ceil_slot(when: datetime, interval_s: int) -> datetime:
    start = slot_start(when, interval_s)
    return start if start == when else start + timedelta(seconds=interval_s)


def is_passive(integration: Integration, state: CheckState | None, slot: datetime,
               passive_types: Collection[str]) -> bool:
    """Passive by its row, by its type (EXPORTER_PASSIVE_TYPES), or for a cool-down after throttling."""
    cooling = state is not None and state.passive_until is not None and slot < state.passive_until
    return integration.health_mode == "passive" or integration.integration_type in passive_types or cooling


def throttle_fallback(state: CheckState, slot: datetime, fallback_after: int, cooldown_s: int,
                      has_sync_evidence: bool) -> CheckState:
    """Throttled `fallback_after` times in a row: judge it from its sync runs for a cool-down (0: never).

    Only with something to judge by (a sync schedule or reported runs): otherwise passive health would
    freeze its status for the whole cool-down, so it stays active, backing off and honouring Retry-After.
    """
    if not fallback_after or state.rate_limited_streak < fallback_after or not has_sync_evidence:
        return state
    return replace(state, rate_limited_streak=0, passive_until=slot + timedelta(seconds=cooldown_s))


def after_passive(previous: CheckState | None, result: HealthResult, slot: datetime, interval_s: int) -> CheckState:
    """The state after a passive assessment: failures count, but nothing is deferred (no vendor was asked)."""
    previous = previous or CheckState()
    failures = previous.consecutive_failures + 1 if counts_as_failure(result) else 0
    return CheckState(failures, next_slot(slot, interval_s), 0, previous.passive_until)


def assume_next_check(r: IntegrationResult, interval_s: int) -> IntegrationResult:
    """A restored row written without a next check (by hand, or by an older version) is due in its next slot."""
    if r.state.next_check_at is not None:
        return r
    return replace(r, state=replace(r.state, next_check_at=next_slot(r.result.checked_at, interval_s)))


def keep_credential_expiry(previous: HealthResult | None, result: HealthResult, *, looked_up: bool) -> HealthResult:
    """The result, carrying the last known credential expiry when it has none only because nothing looked:
    a check cut short (timeout, network) or a passive result. A healthy check did look, so its "none" (the
    metadata was removed) stands. Without this, an outage would clear the expiry and re-fire its alert."""
    if result.credential_expires_at is not None or previous is None or previous.credential_expires_at is None:
        return result
    if looked_up and result.status == HealthStatus.HEALTHY:
        return result
    return replace(result, credential_expires_at=previous.credential_expires_at)
