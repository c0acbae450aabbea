"""Warm-ups before scheduled syncs: when (pure, across DST), which URL, what an answer means, and the loop
against loopback servers under the egress policy (nothing leaves loopback; no durations asserted)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.adapters.transport import make_session
from exporter.core.egress import Blocked, EgressPolicy
from exporter.core.model import Integration
from exporter.core.syncs import SyncSchedule
from exporter.core.warmups import (
    WARMUP_HEADER,
    Warmup,
    WarmupOutcome,
    check_destination,
    classify,
    next_warmup,
    parse_warmup_url,
    record,
)
from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Snapshot
from exporter.engine.warmups import Warmer
from tests.support.listener import Listener, install_guard

ORG = UUID("77777777-7777-4777-8777-777777777777")
OSLO_03 = SyncSchedule(cron="0 3 * * *", timezone="Europe/Oslo")
LOOPBACK = EgressPolicy.from_allow(["127.0.0.1"])


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- when: a pure function of the schedule, the time and the last warmed sync ---

def test_the_warm_up_is_sent_the_lead_time_before_the_next_sync() -> None:
    assert next_warmup(OSLO_03, utc(2026, 11, 22, 12), 30) == Warmup(utc(2026, 11, 23, 1, 59, 30),
                                                                      utc(2026, 11, 23, 2))  # 03:00 CET


def test_across_the_spring_change_the_warm_up_follows_oslo_time_not_utc() -> None:
    """03:00 Oslo is 02:00 UTC in winter and 01:00 UTC from 29 March 2026: the warm-up moves with it."""
    warmed = utc(2026, 3, 28, 2)  # Saturday's sync (03:00 CET) was warmed
    after = utc(2026, 3, 28, 2, 0, 5)
    assert next_warmup(OSLO_03, after, 30, warmed) == Warmup(utc(2026, 3, 29, 0, 59, 30), utc(2026, 3, 29, 1))


def test_a_sync_in_the_skipped_spring_hour_is_warmed_before_the_moment_after_the_gap() -> None:
    schedule = SyncSchedule(cron="30 2 * * *", timezone="Europe/Oslo")  # 02:30 does not exist on 29 March
    assert next_warmup(schedule, utc(2026, 3, 28, 12), 30) == Warmup(utc(2026, 3, 29, 0, 59, 30),
                                                                      utc(2026, 3, 29, 1))  # 03:00 CEST


def test_a_sync_in_the_repeated_autumn_hour_is_warmed_once() -> None:
    schedule = SyncSchedule(cron="30 2 * * *", timezone="Europe/Oslo")  # 02:30 happens twice on 25 October
    first = next_warmup(schedule, utc(2026, 10, 24, 12), 30)
    assert first == Warmup(utc(2026, 10, 25, 0, 29, 30), utc(2026, 10, 25, 0, 30))  # the first 02:30 (CEST)
    # after it was sent, the repeated 02:30 (CET, 01:30 UTC) is not warmed: the next is Monday's
    again = next_warmup(schedule, utc(2026, 10, 25, 0, 29, 31), 30, warmed=first.sync_at)
    assert again == Warmup(utc(2026, 10, 26, 1, 29, 30), utc(2026, 10, 26, 1, 30))


def test_inside_the_lead_window_the_warm_up_is_due_now_and_only_once() -> None:
    every_hour = SyncSchedule(period_s=3600)
    now = utc(2026, 11, 22, 12, 59, 50)  # a start-up 10 s before the 13:00 sync
    assert next_warmup(every_hour, now, 30) == Warmup(now, utc(2026, 11, 22, 13))
    assert next_warmup(every_hour, now, 30, warmed=utc(2026, 11, 22, 13)).sync_at == utc(2026, 11, 22, 14)


def test_a_sync_every_minute_is_warmed_at_most_every_five_minutes() -> None:
    every_minute = SyncSchedule(cron="* * * * *")
    warmed = utc(2026, 11, 22, 12, 1)
    assert next_warmup(every_minute, utc(2026, 11, 22, 12, 0, 31), 30, warmed).sync_at == utc(2026, 11, 22, 12, 6)


# --- which URL: tenant input ---

@pytest.mark.parametrize(("value", "error"), [
    ("ftp://fn.example.com/warm", "must be an https:// URL with a host"),
    ("https://", "must be an https:// URL with a host"),
    ("https://user:pw@fn.example.com/", "user-info (user:password@) is not allowed"),
    ("https://fn.example.com/a b", "spaces or control characters"),
    ("https://fn.example.com/\r\nX-Injected: 1", "spaces or control characters"),
    ("https://fn.example.com:99999/", "not a valid URL"),
    ("https://fn.example.com/" + "a" * 2100, "longer than 2048 characters"),
    (42, "must be a string"),
])
def test_a_bad_warm_up_url_is_refused_saying_why(value: object, error: str) -> None:
    with pytest.raises(ValueError, match=None) as refused:
        parse_warmup_url(value)
    assert error in str(refused.value)


def test_plain_http_goes_only_to_a_host_the_operator_allowed() -> None:
    with pytest.raises(Blocked, match=r"https only\); an operator can allow it with EXPORTER_EGRESS_ALLOW"):
        check_destination("http://fn.example.com/warm", EgressPolicy())
    check_destination("http://127.0.0.1:8080/warm", LOOPBACK)
    check_destination("https://fn.example.com/warm", EgressPolicy())


# --- what an answer means ---

@pytest.mark.parametrize(("status", "latency_s", "outcome"), [
    (200, 0.1, WarmupOutcome.WARM), (204, 2.5, WarmupOutcome.COLD_START), (302, 0.1, WarmupOutcome.WARM),
    (401, 0.1, WarmupOutcome.HTTP_ERROR), (503, 9.0, WarmupOutcome.HTTP_ERROR),
])
def test_a_slow_first_answer_is_a_cold_start_and_an_error_answer_a_failure(status, latency_s, outcome) -> None:
    assert classify(status, latency_s, cold_start_s=2.0) is outcome


def test_failures_count_up_in_a_row_and_any_answer_ends_the_streak() -> None:
    at = utc(2026, 11, 22, 12)
    r = None
    for outcome in (WarmupOutcome.TIMEOUT, WarmupOutcome.BLOCKED, WarmupOutcome.HTTP_ERROR):
        r = record(r, at, at, outcome, None)
    assert r.consecutive_failures == 3
    assert record(r, at, at, WarmupOutcome.COLD_START, 3.0).consecutive_failures == 0


# --- the loop, against loopback servers ---

class SlowFirst:
    """A sync function on loopback: its first answer waits (a cold start), later ones come at once."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.first_delay_s = 0.2

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        if len(self.requests) == 1:
            await asyncio.sleep(self.first_delay_s)
        return web.Response(text="warm")


@pytest.fixture
async def function_server(aiohttp_server) -> AsyncIterator[tuple[SlowFirst, str]]:
    fn = SlowFirst()
    app = web.Application()
    app.router.add_get("/functions/v1/sync", fn.handle)
    server = await aiohttp_server(app)
    yield fn, f"http://127.0.0.1:{server.port}/functions/v1/sync"


def hourly(url: str, org: UUID = ORG, kind: str = "xledger") -> Integration:
    return Integration(org, kind, {}, sync={"cron": None, "timezone": "UTC", "period_s": 3600, "grace_s": 900,
                                            "max_duration_s": 3600}, warmup_url=url)


@contextlib.asynccontextmanager
async def running_warmer(integrations: list[Integration], policy: EgressPolicy, *, cold_start_s: float = 0.05
                         ) -> AsyncIterator[tuple[Warmer, Instruments, Snapshot]]:
    """A Warmer on a fixed clock 10 s before an hourly sync (so every warm-up is due at once), running in
    its own task as the service runs it; stopped and awaited on exit."""
    now = utc(2026, 11, 22, 12, 59, 50)
    instruments, snapshot = Instruments(CollectorRegistry(), "test", known_types={"xledger"}), Snapshot()
    async with make_session(policy=policy) as session:
        warmer = Warmer(session=session, instruments=instruments, snapshot=snapshot,
                        integrations=lambda: integrations, lead_s=30, cold_start_s=cold_start_s, timeout_s=5,
                        clock=lambda: now)
        stop = asyncio.Event()
        task = asyncio.create_task(warmer.run_forever(stop))
        try:
            yield warmer, instruments, snapshot
        finally:
            stop.set()
            await task
    assert not warmer.in_flight


async def settled(warmer: Warmer, snapshot: Snapshot, n: int) -> None:
    for _ in range(500):
        if len(snapshot.warmups) >= n and not warmer.in_flight:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the warm-ups did not finish")


def counted(instruments: Instruments, outcome: WarmupOutcome) -> float:
    return instruments.sync_warmups.labels(outcome.value)._value.get()


async def test_a_slow_first_answer_is_counted_as_a_cold_start(function_server, caplog) -> None:
    fn, url = function_server
    caplog.set_level("INFO", logger="exporter.engine.warmups")
    async with running_warmer([hourly(url)], LOOPBACK) as (warmer, instruments, snapshot):
        await settled(warmer, snapshot, 1)
    assert len(fn.requests) == 1 and fn.requests[0][WARMUP_HEADER] == "1"
    assert counted(instruments, WarmupOutcome.COLD_START) == 1
    assert instruments.sync_cold_starts.labels("xledger", "warmup")._value.get() == 1
    warm = snapshot.warmups[(ORG, "xledger")]
    assert (warm.outcome, warm.sync_at, warm.consecutive_failures) == (WarmupOutcome.COLD_START,
                                                                       utc(2026, 11, 22, 13), 0)
    assert warm.latency_s is not None and warm.latency_s > 0.05
    [line] = [r for r in caplog.records if r.getMessage().startswith("cold start")]
    assert (line.org_id, line.integration_type) == (str(ORG), "xledger")


async def test_a_quick_answer_is_warm_and_no_cold_start(function_server) -> None:
    fn, url = function_server
    fn.first_delay_s = 0
    async with running_warmer([hourly(url)], LOOPBACK, cold_start_s=30) as (warmer, instruments, snapshot):
        await settled(warmer, snapshot, 1)
    assert counted(instruments, WarmupOutcome.WARM) == 1
    assert instruments.sync_cold_starts.labels("xledger", "warmup")._value.get() == 0


async def test_a_loopback_warm_up_url_receives_nothing_unless_the_operator_allowed_it(monkeypatch) -> None:
    guard = install_guard(monkeypatch)
    listener = await Listener().start()
    try:
        urls = [f"https://127.0.0.1:{listener.port}/warm", f"https://localhost:{listener.port}/warm",
                f"http://127.0.0.1:{listener.port}/warm", f"https://0x7f.1:{listener.port}/warm"]
        integrations = [hourly(u, UUID(int=n + 1)) for n, u in enumerate(urls)]
        async with running_warmer(integrations, EgressPolicy()) as (warmer, instruments, snapshot):
            await settled(warmer, snapshot, len(urls))
        assert (listener.connections, bytes(listener.received)) == (0, b"")
        assert counted(instruments, WarmupOutcome.BLOCKED) == len(urls)
        assert {w.outcome for w in snapshot.warmups.values()} == {WarmupOutcome.BLOCKED}
        assert guard.attempts == []
        # the operator allows the address: the same warm-up now arrives
        async with running_warmer([hourly(f"http://127.0.0.1:{listener.port}/warm")], LOOPBACK) as (
                warmer, instruments, snapshot):
            await settled(warmer, snapshot, 1)
        assert listener.connections == 1
        assert b"GET /warm HTTP/1.1" in listener.received and WARMUP_HEADER.lower().encode() in \
            bytes(listener.received).lower()
    finally:
        await listener.close()


async def test_a_bad_url_or_a_dead_endpoint_fails_its_own_integration_only(function_server) -> None:
    fn, url = function_server
    dead = Listener()
    await dead.start()
    port = dead.port
    await dead.close()  # nothing listens there now
    integrations = [hourly(url, UUID(int=1)), hourly("https://user:pw@fn.example.com/", UUID(int=2)),
                    hourly(f"http://127.0.0.1:{port}/warm", UUID(int=3))]
    async with running_warmer(integrations, LOOPBACK, cold_start_s=30) as (warmer, instruments, snapshot):
        await settled(warmer, snapshot, 3)
    outcomes = {k[0].int: w.outcome for k, w in snapshot.warmups.items()}
    assert outcomes == {1: WarmupOutcome.WARM, 2: WarmupOutcome.INVALID_CONFIG, 3: WarmupOutcome.UNREACHABLE}
    assert len(fn.requests) == 1


async def test_integrations_without_a_schedule_or_a_url_are_not_warmed(function_server) -> None:
    fn, url = function_server
    no_schedule = Integration(UUID(int=1), "xledger", {}, warmup_url=url)
    no_url = hourly(url, UUID(int=2))
    no_url = Integration(no_url.org_id, no_url.integration_type, {}, sync=no_url.sync)
    async with running_warmer([no_schedule, no_url], LOOPBACK) as (warmer, _, snapshot):
        todo, wait = warmer.due(utc(2026, 11, 22, 12, 59, 50))
        assert (todo, wait) == ([], 60.0)
    assert fn.requests == [] and snapshot.warmups == {}


async def test_stopping_the_loop_cancels_a_warm_up_in_flight(aiohttp_server) -> None:
    started = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_get("/", hang)
    server = await aiohttp_server(app)
    async with running_warmer([hourly(f"http://127.0.0.1:{server.port}/")], LOOPBACK) as (warmer, _, snapshot):
        await asyncio.wait_for(started.wait(), 10)
        assert len(warmer.in_flight) == 1
    assert snapshot.warmups == {}  # cancelled, not recorded as a failure of the function


async def test_organisations_sharing_one_sync_function_warm_it_with_one_request(function_server) -> None:
    fn, url = function_server
    orgs = [UUID(int=n) for n in range(1, 6)]
    async with running_warmer([hourly(url, org) for org in orgs], LOOPBACK) as (warmer, instruments, snapshot):
        await settled(warmer, snapshot, len(orgs))
    assert len(fn.requests) == 1
    assert counted(instruments, WarmupOutcome.COLD_START) == 1
    assert instruments.sync_cold_starts.labels("xledger", "warmup")._value.get() == 1  # one function, once
    assert {k[0] for k in snapshot.warmups} == set(orgs)
    assert {w.outcome for w in snapshot.warmups.values()} == {WarmupOutcome.COLD_START}
