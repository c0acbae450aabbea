"""Scheduling decisions with a fake clock: slots, due-ness, backoff growth and reset, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.core.model import AUTH_REASONS, CheckState, HealthStatus, Integration, Reason, make_result
from exporter.core.policy import (
    BackoffCaps,
    after_check,
    after_evidence,
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


def deferrals(reason: Reason, n: int, caps: BackoffCaps | None = None) -> tuple[CheckState, list[float]]:
    state, slot, seen = None, at(0), []
    for _ in range(n):
        state = after_check(state, failure(reason), slot, 900, rng=lambda: 0.0, caps=caps or BackoffCaps())
        seen.append((state.next_check_at - slot) / MIN)
        slot = state.next_check_at
    return state, seen


def test_unreachable_defers_exponentially_up_to_an_hour_so_a_recovery_is_seen_within_it() -> None:
    state, seen = deferrals(Reason.HTTP_5XX, 6)
    assert seen == [15, 30, 60, 60, 60, 60]
    assert state.consecutive_failures == 6


@pytest.mark.parametrize("reason", [Reason.RATE_LIMITED, Reason.QUOTA, *sorted(AUTH_REASONS)])
def test_refusals_defer_exponentially_up_to_four_hours_because_asking_again_spends_quota(reason) -> None:
    assert deferrals(reason, 7)[1] == [15, 30, 60, 120, 240, 240, 240]


def test_backoff_caps_come_from_settings() -> None:
    caps = BackoffCaps(refused_s=7200, unreachable_s=1800)
    assert deferrals(Reason.TIMEOUT, 4, caps)[1] == [15, 30, 30, 30]
    assert deferrals(Reason.RATE_LIMITED, 5, caps)[1] == [15, 30, 60, 120, 120]
    with pytest.raises(ValueError, match=">= 0"):
        BackoffCaps(unreachable_s=-1)


def test_the_latest_cause_decides_the_cap() -> None:
    state, _ = deferrals(Reason.RATE_LIMITED, 4)  # 4 failures: the next base is 120 min
    assert after_check(state, failure(Reason.TIMEOUT), at(0), 900, rng=lambda: 0.0).next_check_at == at(60)
    assert after_check(state, failure(Reason.QUOTA), at(0), 900, rng=lambda: 0.0).next_check_at == at(240)


def test_a_success_resets_the_backoff() -> None:
    state, _ = deferrals(Reason.TIMEOUT, 4)
    healthy = make_result(HealthStatus.HEALTHY, 5, T)
    assert after_check(state, healthy, at(300), 900) == CheckState(0, at(315))


def test_a_sync_success_after_the_last_failure_ends_the_backoff_in_the_next_slot() -> None:
    last = failure(Reason.HTTP_5XX)  # checked at T
    state = CheckState(4, at(60))
    assert after_evidence(state, last, at(5), at(15), 900) == CheckState(4, at(15))


@pytest.mark.parametrize(("state", "success_at", "why"), [
    (CheckState(4, at(60)), at(0), "the sync succeeded no later than the failed check"),
    (CheckState(4, at(60)), None, "no sync has succeeded"),
    (CheckState(0, at(30)), at(5), "not backing off"),
    (CheckState(2, at(15)), at(5), "already due"),
    (CheckState(2, None), at(5), "no deferral recorded"),
])
def test_evidence_changes_nothing_when_it_says_nothing_new(state, success_at, why) -> None:
    assert after_evidence(state, failure(Reason.HTTP_5XX), success_at, at(15), 900) == state, why


def test_evidence_still_honours_a_retry_after() -> None:
    last = failure(Reason.RATE_LIMITED, retry_after=2000)  # until T + 33 min 20 s: the 45-minute slot
    assert after_evidence(CheckState(3, at(120)), last, at(5), at(15), 900).next_check_at == at(45)
    assert after_evidence(CheckState(3, at(30)), last, at(5), at(15), 900).next_check_at == at(30)


def test_evidence_for_an_hourly_integration_waits_for_its_hour() -> None:
    state = after_evidence(CheckState(3, at(180)), failure(), at(5), at(15), 3600)
    assert state.next_check_at == at(15)
    assert not is_due(at(15), 3600, state) and is_due(at(60), 3600, state)


def test_throttling_counts_a_streak_that_other_outcomes_reset() -> None:
    state = None
    for _ in range(3):
        state = after_check(state, failure(Reason.RATE_LIMITED), at(0), 900, rng=lambda: 0.0)
    assert state.rate_limited_streak == 3
    assert after_check(state, failure(Reason.TIMEOUT), at(0), 900).rate_limited_streak == 0


def test_slow_degraded_is_not_a_failure_but_throttling_and_rejected_credentials_are() -> None:
    slow = make_result(HealthStatus.DEGRADED, 2500, T, "slow", Reason.SLOW)
    assert after_check(CheckState(2, None), slow, at(0), 900).consecutive_failures == 0
    for reason in (Reason.RATE_LIMITED, Reason.QUOTA, *AUTH_REASONS):
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
