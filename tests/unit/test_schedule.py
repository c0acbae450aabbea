"""Scheduling decisions with a fake clock: slots, due-ness, backoff growth and reset, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.core.model import CheckState, HealthStatus, Integration, Reason, make_result
from exporter.core.policy import (
    after_check,
    backoff_s,
    due,
    interval_for,
    is_due,
    next_slot,
    slot_start,
    validate_interval,
)

ORG = UUID("55555555-5555-4555-8555-555555555555")
T = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def at(minutes: float) -> datetime:
    return T + minutes * MIN


@pytest.mark.parametrize(("now", "slot"), [(at(0), at(0)), (at(7.5), at(0)), (at(14.99), at(0)), (at(15), at(15)),
                                           (at(59), at(45))])
def test_slots_are_aligned_to_the_wall_clock(now, slot) -> None:
    assert slot_start(now, 900) == slot
    assert next_slot(now, 900) == slot + 15 * MIN


def test_intervals_below_15_minutes_are_refused_unless_allowed() -> None:
    with pytest.raises(ValueError, match="below 900 s.*EXPORTER_ALLOW_FAST_INTERVAL=true"):
        validate_interval(60, allow_fast=False)
    validate_interval(60, allow_fast=True)
    with pytest.raises(ValueError, match="must divide a day evenly"):
        validate_interval(7 * 60, allow_fast=True)


def test_xledger_is_hourly_by_default_and_a_config_can_override() -> None:
    types = {"xledger": 3600}
    assert interval_for(Integration(ORG, "xledger", {}), 900, types) == 3600
    assert interval_for(Integration(ORG, "fiken", {}), 900, types) == 900
    assert interval_for(Integration(ORG, "fiken", {"check_interval_seconds": 1000}), 900, types) == 1800
    assert interval_for(Integration(ORG, "fiken", {"check_interval_seconds": "x"}), 900, types) == 900


def test_an_hourly_integration_is_due_only_on_the_hour() -> None:
    integrations = [Integration(ORG, "xledger", {}), Integration(ORG, "fiken", {})]
    kinds = [[i.integration_type for i in due(integrations, at(m), 900, {"xledger": 3600}, {})]
             for m in (0, 15, 30, 45, 60)]
    assert kinds == [["xledger", "fiken"], ["fiken"], ["fiken"], ["fiken"], ["xledger", "fiken"]]


def test_a_deferred_integration_is_not_due_until_its_time() -> None:
    state = CheckState(3, at(60))
    assert not is_due(at(45), 900, state)
    assert is_due(at(60), 900, state)


def failure(reason: Reason = Reason.TIMEOUT, retry_after: float | None = None):
    status = HealthStatus.UNREACHABLE if reason in (Reason.TIMEOUT, Reason.HTTP_5XX) else HealthStatus.DEGRADED
    return make_result(status, 10, T, "x", reason, retry_after)


def test_backoff_grows_15_30_60_up_to_4_hours_without_jitter() -> None:
    assert [backoff_s(n, 900, rng=lambda: 0.0) // 60 for n in range(1, 9)] == [15, 30, 60, 120, 240, 240, 240, 240]


@given(failures=st.integers(1, 30), r=st.floats(0, 0.999))
def test_jitter_keeps_backoff_on_whole_slots_between_base_and_cap(failures: int, r: float) -> None:
    plain, jittered = backoff_s(failures, 900, rng=lambda: 0.0), backoff_s(failures, 900, rng=lambda: r)
    assert jittered % 900 == 0
    assert plain <= jittered <= max(plain, 4 * 3600)
    assert jittered <= plain * 1.25


def test_failures_defer_exponentially_and_a_success_resets() -> None:
    state, slot, seen = None, at(0), []
    for _ in range(4):
        state = after_check(state, failure(), slot, 900, rng=lambda: 0.0)
        seen.append(((state.next_check_at - slot) / MIN, state.consecutive_failures))
        slot = state.next_check_at
    assert seen == [(15, 1), (30, 2), (60, 3), (120, 4)]
    healthy = make_result(HealthStatus.HEALTHY, 5, T)
    assert after_check(state, healthy, slot, 900) == CheckState(0, slot + 15 * MIN)


def test_throttling_counts_a_streak_that_other_outcomes_reset() -> None:
    state = None
    for _ in range(3):
        state = after_check(state, failure(Reason.RATE_LIMITED), at(0), 900, rng=lambda: 0.0)
    assert state.rate_limited_streak == 3
    assert after_check(state, failure(Reason.TIMEOUT), at(0), 900).rate_limited_streak == 0


def test_slow_degraded_is_not_a_failure_but_throttling_and_rejected_credentials_are() -> None:
    slow = make_result(HealthStatus.DEGRADED, 2500, T, "slow", Reason.SLOW)
    assert after_check(CheckState(2, None), slow, at(0), 900).consecutive_failures == 0
    for reason in (Reason.RATE_LIMITED, Reason.QUOTA, Reason.AUTH):
        assert after_check(None, failure(reason), at(0), 900).consecutive_failures == 1


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    state = after_check(None, failure(Reason.RATE_LIMITED, retry_after=2000), at(0), 900, rng=lambda: 0.0)
    assert state.next_check_at == at(45)  # 2000 s → the first slot at or after 33 min 20 s


def test_an_absurd_retry_after_is_capped_at_a_day() -> None:
    state = after_check(None, failure(Reason.RATE_LIMITED, retry_after=10 * 86400), at(0), 900, rng=lambda: 0.0)
    assert state.next_check_at == at(24 * 60)


def test_hourly_integration_next_check_is_the_next_hour() -> None:
    state = after_check(None, make_result(HealthStatus.HEALTHY, 5, T), at(15), 3600)
    assert state.next_check_at == at(60)
