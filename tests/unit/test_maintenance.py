"""Maintenance windows: the pure decisions (core/maintenance.py), and the real scheduler over the simulator
with a fake clock: results flagged while a window lasts, the gauge 1 and then 0 on time, failures inside a
window neither counted nor backed off, and the last known windows kept while the database is away."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from exporter.core import maintenance
from exporter.core.maintenance import Window
from exporter.core.model import CheckState, HealthStatus, Integration, Reason, make_result
from exporter.demo.simulator import Mode
from exporter.services import build_services
from exporter.web.metrics import Exposition
from tests.helpers import gauges, settings_for
from tests.support.fakes import loopback_session
from tests.support.memory_store import MemoryStore

ORG, OTHER = UUID("77777777-7777-4777-8777-777777777777"), UUID("88888888-8888-4888-8888-888888888888")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def window(org: UUID | None = ORG, kind: str | None = "http", start: datetime = T0,
           end: datetime = T0 + timedelta(hours=1), n: int = 1) -> Window:
    return Window(UUID(int=n), org, kind, start, end, "vendor upgrade")


@pytest.mark.parametrize(("w", "org", "kind", "at", "covers"), [
    (window(), ORG, "http", T0, True),  # the start is inclusive
    (window(), ORG, "http", T0 + timedelta(hours=1), False),  # the end is not
    (window(), ORG, "http", T0 - MIN, False),
    (window(), OTHER, "http", T0, False),
    (window(), ORG, "fiken", T0, False),
    (window(org=None), OTHER, "http", T0, True),  # every organisation
    (window(kind=None), ORG, "fiken", T0, True),  # every type
    (window(org=None, kind=None), OTHER, "xledger", T0 + 59 * MIN, True),
])
def test_a_window_covers_its_scope_from_its_start_until_just_before_its_end(w, org, kind, at, covers) -> None:
    assert w.covers(org, kind, at) is covers
    assert (maintenance.covering([w], org, kind, at) is w) is covers


def test_covered_picks_the_integrations_any_active_window_applies_to() -> None:
    keys = [(ORG, "http"), (ORG, "fiken"), (OTHER, "http")]
    windows = [window(kind="fiken", n=1), window(org=OTHER, start=T0 + timedelta(hours=2),
                                                 end=T0 + timedelta(hours=3), n=2)]
    assert maintenance.covered(windows, keys, T0) == {(ORG, "fiken")}
    assert maintenance.covered(windows, keys, T0 + timedelta(hours=2)) == {(OTHER, "http")}
    assert maintenance.covered(windows, keys, T0 + timedelta(hours=5)) == set()
    by_org, by_type = window(kind=None, n=3), window(org=None, kind="http", n=4)
    assert maintenance.covered([by_org], keys, T0) == {(ORG, "http"), (ORG, "fiken")}
    assert maintenance.covered([by_type], keys, T0) == {(ORG, "http"), (OTHER, "http")}
    assert maintenance.covered([window(org=None, kind=None, n=5)], keys, T0) == set(keys)


SLOT_S = 900


@pytest.mark.parametrize(("result", "expected"), [
    (make_result(HealthStatus.UNREACHABLE, 5, T0, "HTTP 503", Reason.HTTP_5XX),
     CheckState(1, T0 + timedelta(minutes=15))),  # not counted, not deferred
    (make_result(HealthStatus.DEGRADED, 5, T0, "HTTP 429", Reason.RATE_LIMITED, retry_after_s=2000),
     CheckState(1, T0 + timedelta(minutes=45))),  # the vendor's Retry-After still holds (2000 s → third slot)
    (make_result(HealthStatus.HEALTHY, 5, T0), CheckState(0, T0 + timedelta(minutes=15))),  # a recovery resets
])
def test_a_check_inside_a_window_counts_no_failure_but_a_success_resets(result, expected) -> None:
    assert maintenance.after_check(CheckState(1, T0), result, T0, SLOT_S) == expected


def test_a_failed_sync_inside_a_window_is_not_counted_either() -> None:
    failed = make_result(HealthStatus.UNREACHABLE, 0, T0, "sync failed", Reason.SYNC_FAILED)
    assert maintenance.after_passive(CheckState(2, T0), failed, T0, SLOT_S).consecutive_failures == 2
    ok = make_result(HealthStatus.HEALTHY, 0, T0)
    assert maintenance.after_passive(CheckState(2, T0), ok, T0, SLOT_S).consecutive_failures == 0


@pytest.mark.parametrize(("start", "end", "force", "why"), [
    (T0, T0, False, "ends_at must be after starts_at"),
    (T0, T0 - MIN, False, "ends_at must be after starts_at"),
    (T0 - timedelta(hours=2), T0 - timedelta(hours=1), False, "already ended"),
    (T0, T0 + timedelta(days=7, minutes=1), False, "at most 7 days"),
    (T0, T0 + timedelta(days=7, minutes=1), True, None),
    (T0 - timedelta(hours=1), T0 + timedelta(days=6), False, None),  # started already: fine
])
def test_a_new_window_must_end_after_it_starts_and_after_now_and_last_a_week_at_most(start, end, force, why) -> None:
    refused = maintenance.refusal(start, end, T0, force=force)
    assert (refused is None) if why is None else (why in refused), refused


def test_only_a_window_of_the_very_same_scope_and_overlapping_time_clashes() -> None:
    existing = [window(n=1), window(kind=None, n=2), window(org=None, start=T0 + timedelta(hours=3),
                                                            end=T0 + timedelta(hours=4), n=3)]
    assert maintenance.same_scope_overlap(window(start=T0 + 30 * MIN, end=T0 + timedelta(hours=2), n=9),
                                          existing) is existing[0]
    assert maintenance.same_scope_overlap(window(start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2), n=9),
                                          existing) is None  # back to back is fine
    assert maintenance.same_scope_overlap(window(kind="fiken", n=9), existing) is None


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def maintenance_gauge(text: str) -> float:
    return gauges(text)["integration_health_maintenance"][(("integration_type", "http"), ("org_id", str(ORG)))]


async def test_a_window_flags_results_sets_the_gauge_and_ends_on_time(sim) -> None:
    state, base = sim
    state.modes["down"] = Mode("server_error")
    store = MemoryStore([Integration(ORG, "http", {"url": f"{base}/http/down", "method": "GET"})])
    store.windows = [window(start=T0, end=T0 + timedelta(minutes=40))]  # ends between two cycles
    clock = Clock(T0)
    async with loopback_session() as session:
        services = build_services(settings_for("postgresql://unused", check_interval=900), store=store,
                                  session=session, clock=clock)  # type: ignore[arg-type]
        exposition = Exposition(services.instruments, services.snapshot, clock=clock)
        scheduler, flags, failures, scrapes = services.scheduler, [], [], {}
        for minute in range(0, 76):
            clock.now = T0 + minute * MIN
            if minute % 15 == 0:
                for r in await scheduler.run_cycle(clock.now, clock.now):  # none while backing off
                    flags.append(r.maintenance)
                    failures.append(r.state.consecutive_failures)
            scrapes[minute] = maintenance_gauge(exposition.render().decode())
    assert flags == [True, True, True, False, False]
    assert failures == [0, 0, 0, 1, 2], "failures inside the window do not count; after it, as ever"
    assert state.requests["down"] == 5, "checks every slot during the window; backoff only after it (11:15 skipped)"
    assert [m for m, v in scrapes.items() if v == 1.0] == list(range(40)), "1 from 10:00 until 10:40, then 0"
    history = [r.maintenance for (_, _, slot), r in sorted(store.slots.items())]
    assert history == [True, True, True, False, False]
    assert store.status[(ORG, "http")].maintenance is False


async def test_the_last_known_windows_stand_while_the_database_is_away(sim) -> None:
    _, base = sim
    store = MemoryStore([Integration(ORG, "http", {"url": f"{base}/http/ok", "method": "GET"})])
    store.windows = [window(start=T0, end=T0 + timedelta(hours=2))]
    clock = Clock(T0)
    async with loopback_session() as session:
        services = build_services(settings_for("postgresql://unused", check_interval=900), store=store,
                                  session=session, clock=clock)  # type: ignore[arg-type]
        await services.scheduler.run_cycle(T0, T0)
        store.down = True
        clock.now = T0 + timedelta(minutes=15)
        [r] = await services.scheduler.run_cycle(clock.now, clock.now)
    assert r.maintenance is True
    assert services.snapshot.windows == tuple(store.windows)
