"""Sync-schedule adherence with a fake clock, DST days in Europe/Oslo included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from exporter.core.model import HealthStatus, Reason
from exporter.core.syncs import (
    SyncRun,
    SyncSchedule,
    SyncState,
    assess,
    new_cold_starts,
    passive_result,
    schedule_from_columns,
)

OSLO = ZoneInfo("Europe/Oslo")
DAILY_2 = SyncSchedule(cron="0 2 * * *", timezone="Europe/Oslo", grace_s=900, max_duration_s=3600)
H = timedelta(hours=1)


def oslo(*args: int) -> datetime:
    return datetime(*args, tzinfo=OSLO).astimezone(UTC)


def ok(at: datetime, minutes: int = 5, drift_s: int = 0) -> SyncRun:
    start = at + timedelta(seconds=drift_s)
    return SyncRun(at, "success", start, start + timedelta(minutes=minutes))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "exactly one of a cron expression or a period"),
    ({"cron": "0 2 * * *", "period_s": 60}, "exactly one of"),
    ({"cron": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*'"),
    ({"period_s": 0}, "the sync period must be > 0 seconds"),
    ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
])
def test_a_bad_schedule_says_what_is_wrong(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        SyncSchedule(**kwargs)


def test_a_daily_oslo_schedule_is_expected_at_local_02_00() -> None:
    now = oslo(2026, 6, 10, 12, 0)
    assert DAILY_2.previous(now) == oslo(2026, 6, 10, 2, 0)
    assert DAILY_2.next(now) == oslo(2026, 6, 11, 2, 0)
    assert DAILY_2.previous(oslo(2026, 6, 10, 2, 0)) == oslo(2026, 6, 10, 2, 0)  # a tick is its own period


def test_spring_forward_a_skipped_0230_is_expected_at_0300() -> None:
    sched = SyncSchedule(cron="30 2 * * *", timezone="Europe/Oslo")
    assert sched.next(oslo(2026, 3, 28, 12, 0)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert sched.next(datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == oslo(2026, 3, 30, 2, 30)


def test_autumn_back_a_repeated_0230_is_expected_once() -> None:
    sched = SyncSchedule(cron="30 2 * * *", timezone="Europe/Oslo")
    first = sched.next(oslo(2026, 10, 24, 12, 0))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first pass
    assert sched.next(first) == oslo(2026, 10, 26, 2, 30)  # not 02:30 CET an hour later
    assert sched.previous(datetime(2026, 10, 25, 1, 45, tzinfo=UTC)) == first


def test_autumn_back_a_half_hourly_job_is_not_demanded_twice_in_the_repeated_hour() -> None:
    sched = SyncSchedule(cron="*/30 * * * *", timezone="Europe/Oslo")
    ticks, t = [], datetime(2026, 10, 24, 23, 45, tzinfo=UTC)  # 01:45 CEST
    for _ in range(5):
        t = sched.next(t)
        ticks.append(t.astimezone(OSLO).strftime("%H:%M%z"))
    assert ticks == ["02:00+0200", "02:30+0200", "03:00+0100", "03:30+0100", "04:00+0100"]


def test_a_success_for_the_current_period_is_on_schedule_with_its_drift() -> None:
    run = ok(oslo(2026, 6, 10, 2, 0), drift_s=400)
    a = assess(DAILY_2, [run], oslo(2026, 6, 10, 9, 0))
    assert (a.state, a.lateness_s, a.last_run.drift_s) == (SyncState.ON_SCHEDULE, 0.0, 400)
    assert a.last_success == run.finished_at
    assert a.next_expected == oslo(2026, 6, 11, 2, 0)


def test_within_grace_with_no_start_yet_is_still_on_schedule() -> None:
    a = assess(DAILY_2, [ok(oslo(2026, 6, 9, 2, 0))], oslo(2026, 6, 10, 2, 10))
    assert a.state == SyncState.ON_SCHEDULE


def test_past_grace_with_no_start_is_late_by_the_time_since_expected() -> None:
    a = assess(DAILY_2, [ok(oslo(2026, 6, 9, 2, 0))], oslo(2026, 6, 10, 2, 20))
    assert (a.state, a.lateness_s) == (SyncState.LATE, 20 * 60)


def test_a_whole_period_without_a_run_is_missed() -> None:
    assert assess(DAILY_2, [ok(oslo(2026, 6, 8, 2, 0))], oslo(2026, 6, 10, 1, 0)).state == SyncState.LATE
    a = assess(DAILY_2, [ok(oslo(2026, 6, 8, 2, 0))], oslo(2026, 6, 10, 3, 0))  # the 9th's period has ended
    assert a.state == SyncState.MISSED


def test_a_failed_latest_run_is_failed_and_a_later_success_recovers() -> None:
    failed = SyncRun(oslo(2026, 6, 9, 2, 0), "failure", oslo(2026, 6, 9, 2, 0), oslo(2026, 6, 9, 2, 1), "HTTP 500")
    assert assess(DAILY_2, [failed], oslo(2026, 6, 9, 12, 0)).state == SyncState.FAILED
    assert assess(DAILY_2, [failed, ok(oslo(2026, 6, 10, 2, 0))], oslo(2026, 6, 10, 12, 0)).state == \
        SyncState.ON_SCHEDULE


def test_a_run_still_running_past_its_maximum_is_running_too_long() -> None:
    running = SyncRun(oslo(2026, 6, 10, 2, 0), "running", oslo(2026, 6, 10, 2, 0))
    assert assess(DAILY_2, [running], oslo(2026, 6, 10, 2, 30)).state == SyncState.ON_SCHEDULE
    assert assess(DAILY_2, [running], oslo(2026, 6, 10, 3, 30)).state == SyncState.RUNNING_TOO_LONG


def test_a_periodic_schedule_is_aligned_to_the_epoch() -> None:
    sched = SyncSchedule(period_s=3600, grace_s=300)
    now = datetime(2026, 6, 10, 12, 10, tzinfo=UTC)
    assert (sched.previous(now), sched.next(now)) == (now.replace(minute=0), now.replace(minute=0) + H)
    assert assess(sched, [ok(now.replace(minute=0) - H)], now).state == SyncState.LATE


def test_without_a_schedule_the_latest_run_decides() -> None:
    now = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)
    assert assess(None, [], now).state == SyncState.ON_SCHEDULE
    assert assess(None, [SyncRun(now - H, "failure", now - H, now - H, "x")], now).state == SyncState.FAILED


@pytest.mark.parametrize(("runs", "now", "status", "reason", "error"), [
    ([ok(oslo(2026, 6, 10, 2, 0), minutes=3)], oslo(2026, 6, 10, 9, 0), HealthStatus.HEALTHY, None, None),
    ([SyncRun(oslo(2026, 6, 10, 2, 0), "failure", oslo(2026, 6, 10, 2, 0), oslo(2026, 6, 10, 2, 3),
              "Xledger said 500")], oslo(2026, 6, 10, 9, 0), HealthStatus.UNREACHABLE, Reason.SYNC_FAILED,
     "last sync failed: Xledger said 500"),
    ([ok(oslo(2026, 6, 9, 2, 0))], oslo(2026, 6, 10, 2, 30), HealthStatus.DEGRADED, Reason.SYNC_LATE,
     "sync late by 30 min"),
    ([ok(oslo(2026, 6, 8, 2, 0))], oslo(2026, 6, 10, 3, 0), HealthStatus.DEGRADED, Reason.SYNC_MISSED,
     "a scheduled sync did not run"),
])
def test_passive_health_follows_the_syncs(runs, now, status, reason, error) -> None:
    result = passive_result(assess(DAILY_2, runs, now), now)
    assert (result.status, result.reason, result.error) == (status, reason, error)
    if status == HealthStatus.HEALTHY:
        assert result.latency_ms == 3 * 60 * 1000  # the run's duration


def test_no_schedule_and_no_run_gives_no_passive_verdict() -> None:
    now = datetime(2026, 6, 10, tzinfo=UTC)
    assert passive_result(assess(None, [], now), now) is None


def test_schedule_columns_round_trip() -> None:
    assert schedule_from_columns(None) is None
    assert schedule_from_columns({"cron": "0 2 * * *", "timezone": "Europe/Oslo", "period_s": None,
                                  "grace_s": 60, "max_duration_s": 600}) == SyncSchedule(
        cron="0 2 * * *", timezone="Europe/Oslo", grace_s=60, max_duration_s=600)


def test_a_daily_sync_in_the_repeated_autumn_hour_stays_on_schedule_all_night() -> None:
    """02:30 Europe/Oslo on 25 October 2026 happens twice (00:30 and 01:30 UTC): expected once, judged once."""
    schedule = SyncSchedule(cron="30 2 * * *", timezone="Europe/Oslo", grace_s=900)

    def ran(day: int, hour_utc: int) -> SyncRun:
        start = datetime(2026, 10, day, hour_utc, 31, tzinfo=UTC)
        return SyncRun(start - timedelta(minutes=1), "success", start, start + timedelta(minutes=9))
    runs = [ran(24, 0), ran(25, 0)]
    states, previous, now = [], [], datetime(2026, 10, 25, 0, 45, tzinfo=UTC)
    while now < datetime(2026, 10, 25, 4, 0, tzinfo=UTC):
        states.append(assess(schedule, runs, now).state)
        previous.append(schedule.previous(now))
        now += timedelta(minutes=1)
    assert set(states) == {SyncState.ON_SCHEDULE}
    assert set(previous) == {datetime(2026, 10, 25, 0, 30, tzinfo=UTC)}, "the second 02:30 is not a new period"
    assert schedule.next(datetime(2026, 10, 25, 1, 0, tzinfo=UTC)) == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)


def test_cold_starts_counted_once_and_the_held_set_kept_while_nothing_new_came() -> None:
    at = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    cold = [SyncRun(at, "success", cold_start=True), SyncRun(at + H, "success", cold_start=False)]
    new, counted = new_cold_starts(cold, None)
    assert (new, counted) == (0, frozenset({at})), "first sight: the baseline, not news"
    new, again = new_cold_starts(cold, counted)
    assert new == 0 and again is counted, "the held set, not an equal copy for the full collection to walk"
    later = [*cold, SyncRun(at + 2 * H, "success", cold_start=True)]
    assert new_cold_starts(later, counted) == (1, frozenset({at, at + 2 * H}))
