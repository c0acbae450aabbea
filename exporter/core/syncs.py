"""Sync-schedule adherence, pure: when syncs are expected, whether they ran, and the passive health it implies.

DST (Europe/Oslo and any other zone): a wall-clock time skipped by the spring change is expected at the
first moment after the gap (02:30 → 03:00), as croniter yields it; a time repeated by the autumn change
is expected once, at its first occurrence, as cron runs it. A sync is never demanded twice for one
local wall-clock time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from exporter.core.model import HealthResult, HealthStatus, Reason, make_result


class SyncState(StrEnum):
    ON_SCHEDULE = "on_schedule"
    LATE = "late"  # the expected start + grace passed with no start
    RUNNING_TOO_LONG = "running_too_long"
    FAILED = "failed"  # the latest run failed
    MISSED = "missed"  # a whole period passed with no run


@dataclass(frozen=True, slots=True)
class SyncSchedule:
    cron: str | None = None  # "0 2 * * *" in `timezone`
    timezone: str = "UTC"
    period_s: int | None = None  # or every N seconds, aligned to the epoch
    grace_s: int = 900
    max_duration_s: int = 3600

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.period_s is None):
            raise ValueError("a sync schedule needs exactly one of a cron expression or a period")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(f"invalid cron expression {self.cron!r}")
        if self.period_s is not None and self.period_s <= 0:
            raise ValueError("the sync period must be > 0 seconds")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file path
            raise ValueError(f"unknown time zone {self.timezone[:64]!r}") from None
        if self.cron is not None:
            try:  # valid syntax can still never fire (0 2 31 2 *: 31 February)
                self.next(datetime(2000, 1, 1, tzinfo=UTC))
            except CroniterError:
                raise ValueError(f"cron expression {self.cron!r} never fires") from None

    def previous(self, now: datetime) -> datetime:
        """The latest expected start at or before `now`."""
        if self.period_s:
            ts = now.timestamp()
            return datetime.fromtimestamp(ts - ts % self.period_s, UTC)
        it = croniter(self.cron, (now + timedelta(microseconds=1)).astimezone(ZoneInfo(self.timezone)))
        while True:  # arithmetic in UTC, then local: adding to a local time would lose its `fold`
            first = _first_occurrence(it.get_prev(datetime))
            if first <= now:
                return first

    def next(self, now: datetime) -> datetime:
        """The first expected start after `now`."""
        if self.period_s:
            return self.previous(now) + timedelta(seconds=self.period_s)
        it = croniter(self.cron, now.astimezone(ZoneInfo(self.timezone)))
        while True:
            first = _first_occurrence(it.get_next(datetime))
            if first > now:  # a wall time repeated in autumn is due once, at its first pass
                return first


def _first_occurrence(local: datetime) -> datetime:
    """A local wall-clock time as UTC, at its first pass when the autumn change repeats it."""
    return local.replace(fold=0).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class SyncRun:
    scheduled_for: datetime
    outcome: str  # success | failure | running
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_message: str | None = None
    cold_start: bool | None = None  # the sync side says its function started cold (None: not reported)
    invocation_latency_ms: int | None = None  # how long the sync function took to answer its invocation

    @property
    def drift_s(self) -> float | None:
        return (self.started_at - self.scheduled_for).total_seconds() if self.started_at else None

    @property
    def duration_ms(self) -> float:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds() * 1000
        return 0.0


@dataclass(frozen=True, slots=True)
class SyncAssessment:
    state: SyncState
    next_expected: datetime | None
    lateness_s: float  # how far past its expected start the oldest outstanding sync is (0 when none is)
    last_run: SyncRun | None
    last_success: datetime | None


def assess(schedule: SyncSchedule | None, runs: list[SyncRun], now: datetime) -> SyncAssessment:
    """Where an integration's syncs stand at `now`, from its schedule and its recent runs (any order)."""
    runs = sorted(runs, key=lambda r: r.scheduled_for, reverse=True)
    last = runs[0] if runs else None
    last_success = max((r.finished_at or r.scheduled_for for r in runs  # a success dated ahead is no evidence yet
                        if r.outcome == "success" and (r.finished_at or r.scheduled_for) <= now), default=None)
    if schedule is None:
        state = _run_state(last, now, None) if last else SyncState.ON_SCHEDULE
        return SyncAssessment(state, None, 0.0, last, last_success)
    current = schedule.previous(now)
    before = schedule.previous(current - timedelta(microseconds=1))
    upcoming = schedule.next(now)
    run_now = _run_for(runs, current, upcoming)
    run_before = _run_for(runs, before, current)
    if run_now:
        state, lateness = _run_state(run_now, now, schedule.max_duration_s), 0.0
    elif run_before is None and runs and runs[-1].scheduled_for <= before:
        state, lateness = SyncState.MISSED, (now - before).total_seconds()
    elif now >= current + timedelta(seconds=schedule.grace_s):
        state, lateness = SyncState.LATE, (now - current).total_seconds()
    elif run_before:
        state, lateness = _run_state(run_before, now, schedule.max_duration_s), 0.0
    else:
        state, lateness = SyncState.ON_SCHEDULE, 0.0
    return SyncAssessment(state, upcoming, lateness, last, last_success)


def _run_for(runs: list[SyncRun], start: datetime, end: datetime) -> SyncRun | None:
    """The run reported for the period [start, end), if any."""
    return next((r for r in runs if start <= r.scheduled_for < end), None)


def _run_state(run: SyncRun, now: datetime, max_duration_s: int | None) -> SyncState:
    if run.outcome == "failure":
        return SyncState.FAILED
    if run.outcome == "running" and max_duration_s and run.started_at and \
            (now - run.started_at).total_seconds() > max_duration_s:
        return SyncState.RUNNING_TOO_LONG
    return SyncState.ON_SCHEDULE


def new_cold_starts(runs: list[SyncRun], counted: frozenset[datetime] | None) -> tuple[int, frozenset[datetime]]:
    """How many of `runs` are cold starts not yet counted, and the periods counted from now on.

    `counted` None means first sight (a start-up, a shard taken over): the cold starts already there are
    the baseline, not news, so a restart does not count them again. A run reported `running` and later
    finished as a cold start counts once, when the flag first appears.
    """
    cold = frozenset(r.scheduled_for for r in runs if r.cold_start)
    if counted is None:
        return 0, cold
    return len(cold - counted), counted if cold == counted else cold  # the one held: the new one dies at once


def schedule_from_columns(columns: dict[str, object] | None) -> SyncSchedule | None:
    """The schedule stored on integration_config, or None; ValueError names what is wrong with it."""
    if not columns:
        return None
    return SyncSchedule(**columns)  # type: ignore[arg-type]


def passive_result(a: SyncAssessment, now: datetime) -> HealthResult | None:
    """Health from syncs alone: failed → unreachable, late/missed/stuck → degraded, fine → healthy.

    None when there is nothing to judge yet (no schedule and no run reported).
    """
    latency = a.last_run.duration_ms if a.last_run else 0.0
    match a.state:
        case SyncState.FAILED:
            error = a.last_run.error_message if a.last_run and a.last_run.error_message else "the sync failed"
            return make_result(HealthStatus.UNREACHABLE, latency, now, f"last sync failed: {error}",
                               Reason.SYNC_FAILED)
        case SyncState.MISSED:
            return make_result(HealthStatus.DEGRADED, latency, now, "a scheduled sync did not run",
                               Reason.SYNC_MISSED)
        case SyncState.LATE:
            return make_result(HealthStatus.DEGRADED, latency, now,
                               f"sync late by {a.lateness_s / 60:.0f} min", Reason.SYNC_LATE)
        case SyncState.RUNNING_TOO_LONG:
            return make_result(HealthStatus.DEGRADED, latency, now, "sync running too long", Reason.SYNC_LATE)
    if a.last_run is None and a.next_expected is None:
        return None
    return make_result(HealthStatus.HEALTHY, latency, now)
