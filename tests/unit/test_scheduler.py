"""The scheduler's decisions over a real runner and the simulator, or a scripted vendor, with an in-memory store and
a fixed clock: throttling's passive fallback, backoff ended by evidence, caps by cause from settings, status changes
counted for the flapping alert."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from exporter.adapters.base import AdapterSpec
from exporter.adapters.http import HttpConfig
from exporter.core.model import CheckState, HealthStatus, Integration, IntegrationResult, Reason, make_result
from exporter.core.policy import BackoffCaps, throttle_fallback
from exporter.core.syncs import SyncRun
from exporter.demo.simulator import Mode
from exporter.engine.snapshot import Snapshot
from exporter.services import Services, build_services
from exporter.settings import Settings
from tests.helpers import settings_for, wait_until
from tests.support.fakes import loopback_session
from tests.support.memory_store import MemoryStore

ORG = UUID("66666666-6666-4666-8666-666666666666")
SLOT = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("evidence", "passive"), [(True, True), (False, False)])
def test_throttling_falls_back_to_passive_only_with_sync_evidence_to_judge_by(evidence, passive) -> None:
    state = throttle_fallback(CheckState(3, None, rate_limited_streak=3), SLOT, 3, 3600, has_sync_evidence=evidence)
    assert (state.passive_until is not None) is passive
    assert state.passive_until == (SLOT + timedelta(hours=1) if passive else None)


async def test_a_throttled_integration_without_sync_schedule_stays_active_and_keeps_being_checked(sim) -> None:
    state, base = sim
    state.modes["busy"] = Mode("rate_limited", retry_after=1)
    store = MemoryStore([Integration(ORG, "http", {"url": f"{base}/http/busy", "method": "GET"})])
    settings = settings_for("postgresql://unused", check_interval=900, rate_limit_fallback_after=3)
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        for n in range(5):  # 4 h apart, so backoff never skips a cycle
            slot = SLOT + timedelta(hours=4 * n)
            await services.scheduler.run_cycle(slot, slot)
    assert state.requests["busy"] == 5, "an integration with nothing to judge by must not go quiet"
    assert services.snapshot.modes[(ORG, "http")] == "active"
    assert store.status[(ORG, "http")].state.passive_until is None
    assert len([k for k in store.slots if k[:2] == (ORG, "http")]) == 5, "one history row per cycle"


async def test_a_first_cycle_that_cannot_load_integrations_keeps_the_restored_status(sim) -> None:
    _, base = sim
    store = MemoryStore([Integration(ORG, "http", {"url": f"{base}/http/ok", "method": "GET"})])
    settings = settings_for("postgresql://unused", check_interval=900)
    async with loopback_session() as session:
        before = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        await before.scheduler.run_cycle(SLOT, SLOT)
        after = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        after.scheduler.restore(await store.last_results())
        store.down = True
        with pytest.raises(OSError):
            await after.scheduler.run_cycle(SLOT + timedelta(minutes=15), SLOT + timedelta(minutes=15))
    assert list(after.snapshot.results) == [(ORG, "http")], "a restart with the database away must not blank gauges"


def test_every_registered_type_has_a_simulator_fake_and_nothing_else_does() -> None:
    """Adding a type is its module, its ADAPTERS line and its fake: the demo, benchmarks and tests read FAKES."""
    from exporter.adapters import ADAPTERS
    from exporter.demo.simulator import FAKES

    assert FAKES.keys() == ADAPTERS.keys()


async def test_adapters_are_built_once_so_a_token_is_fetched_once_across_cycles(sim) -> None:
    from exporter.demo.simulator import FAKES
    from tests.support.fakes import StaticCredentials

    state, base = sim
    vault_secret, accepted = FAKES["dynamics365"].credential("d")
    state.secrets["d"] = accepted
    store = MemoryStore([Integration(ORG, "dynamics365", FAKES["dynamics365"].config(base, "d"), "ref")])
    settings = settings_for("postgresql://unused", check_interval=900)
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session,  # type: ignore[arg-type]
                                  credentials=StaticCredentials({"ref": vault_secret}))
        for n in range(3):
            await services.scheduler.run_cycle(SLOT + timedelta(minutes=15 * n), SLOT + timedelta(minutes=15 * n))
    assert store.status[(ORG, "dynamics365")].result.status.value == "healthy"
    assert (state.requests["d"], state.token_requests["d"]) == (3, 1)


T = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
KEY = (ORG, "http")


def at(minutes: int) -> datetime:
    return T + timedelta(minutes=minutes)


class Vendor:
    """A scripted check: answers with `status` and counts the checks it was asked for."""

    def __init__(self, clock) -> None:
        self.clock, self.status, self.checks = clock, HealthStatus.UNREACHABLE, 0

    def __call__(self, _ctx) -> Vendor:
        return self

    async def check(self, org_id, config):
        self.checks += 1
        if self.status == HealthStatus.HEALTHY:
            return make_result(self.status, 5, self.clock())
        return make_result(self.status, 5, self.clock(), "server error (HTTP 500)", Reason.HTTP_5XX)


class Day:
    """The service on a fake clock; `cycle(minute)` runs that slot's cycle."""

    def __init__(self, vendor: type[Vendor] = Vendor, **settings) -> None:
        self.now = T
        self.store = MemoryStore([Integration(ORG, "http", {"url": "https://vendor.example/health"},
                                              sync={"cron": "0 * * * *"})])
        self.vendor = vendor(lambda: self.now)
        self.services: Services = build_services(
            Settings(database_url="memory://", credential_provider="none", **settings), store=self.store,
            session=None, specs={"http": AdapterSpec(HttpConfig, self.vendor)}, clock=lambda: self.now,
            rng=lambda: 0.0)  # type: ignore[arg-type]

    async def cycle(self, minute: int) -> int:
        """Run the slot's cycle; how many checks the vendor got."""
        self.now, before = at(minute), self.vendor.checks
        await self.services.scheduler.run_cycle(self.now, self.now)
        return self.vendor.checks - before

    def sync_succeeded(self, scheduled: int, finished: int) -> None:
        self.store.runs.setdefault(KEY, []).append(SyncRun(at(scheduled), "success", at(scheduled), at(finished)))


async def failing_since(day: Day, minutes: list[int]) -> None:
    for minute in minutes:
        assert await day.cycle(minute) == 1


async def test_backoff_hides_a_recovery_until_the_next_deferred_check() -> None:
    day = Day()
    await failing_since(day, [0, 15, 45])  # next: 45 + 60
    day.vendor.status = HealthStatus.HEALTHY
    assert [await day.cycle(m) for m in (60, 75, 90, 105)] == [0, 0, 0, 1]


async def test_a_sync_success_after_the_last_failed_check_brings_the_check_to_the_next_cycle() -> None:
    day = Day()
    await failing_since(day, [0, 15, 45])
    day.vendor.status = HealthStatus.HEALTHY
    day.sync_succeeded(scheduled=60, finished=62)
    assert await day.cycle(75) == 1
    assert day.services.snapshot.results[KEY].result.status == HealthStatus.HEALTHY
    assert day.services.snapshot.results[KEY].state.consecutive_failures == 0


async def test_a_sync_success_before_the_last_failed_check_says_nothing_new() -> None:
    day = Day()
    day.sync_succeeded(scheduled=-60, finished=-58)
    await failing_since(day, [0, 15, 45])
    assert [await day.cycle(m) for m in (60, 75, 90)] == [0, 0, 0]


async def test_a_successful_test_connection_ends_the_backoff() -> None:
    day = Day()
    await failing_since(day, [0, 15, 45])
    day.vendor.status, day.now = HealthStatus.HEALTHY, at(52)
    [result] = await day.services.scheduler.run_health_checks(ORG)
    assert (result.result.status, result.state.consecutive_failures, result.state.next_check_at) == \
        (HealthStatus.HEALTHY, 0, at(60))
    assert await day.cycle(60) == 1


async def test_the_unreachable_cap_comes_from_settings() -> None:
    day = Day(backoff_unreachable_max_seconds=1800)
    assert day.services.scheduler.backoff == BackoffCaps(refused_s=14400, unreachable_s=1800)
    await failing_since(day, [0, 15, 45, 75])  # 15, 30, then capped at 30


@pytest.mark.parametrize("name", ["backoff_max_seconds", "backoff_unreachable_max_seconds"])
def test_a_negative_backoff_cap_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings(database_url="memory://", **{name: -1})


def result(status: HealthStatus, minute: int) -> IntegrationResult:
    return IntegrationResult(ORG, "http", make_result(status, 5, at(minute)))


def test_each_new_status_counts_as_a_change_and_the_same_status_does_not() -> None:
    snapshot = Snapshot()
    for minute, status in enumerate([HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.DEGRADED,
                                     HealthStatus.HEALTHY, HealthStatus.UNREACHABLE]):
        snapshot.update([result(status, minute * 15)])
    assert snapshot.status_changes[KEY] == 3


def test_a_restored_or_older_result_is_not_a_change() -> None:
    snapshot = Snapshot()
    snapshot.update([result(HealthStatus.UNREACHABLE, 15)])  # restored from the database
    snapshot.update([result(HealthStatus.HEALTHY, 0)])  # a late run-now, older than what is shown
    assert snapshot.status_changes == {}
    assert snapshot.copy().status_changes == {}


def test_a_removed_integration_forgets_its_changes() -> None:
    snapshot = Snapshot()
    snapshot.update([result(HealthStatus.HEALTHY, 0)])
    snapshot.update([result(HealthStatus.DEGRADED, 15)])
    assert snapshot.copy().status_changes == {KEY: 1}
    snapshot.retain(set())
    assert snapshot.status_changes == {}


def test_a_check_the_credential_store_prevented_neither_counts_nor_resets_the_vendor_failures() -> None:
    from exporter.core.model import HealthStatus, Reason, make_result
    from exporter.core.policy import after_check

    before = CheckState(3, SLOT, rate_limited_streak=1)
    unavailable = make_result(HealthStatus.DEGRADED, 0, SLOT, "not checked", Reason.CREDENTIAL_UNAVAILABLE)
    after = after_check(before, unavailable, SLOT, 900)
    assert (after.consecutive_failures, after.rate_limited_streak) == (3, 1)
    assert after.next_check_at == SLOT + timedelta(minutes=15), "tried again next cycle, not backed off"


async def test_a_check_the_vault_prevented_leaves_the_last_result_and_counts_as_not_run(sim) -> None:
    from pydantic import SecretStr

    from exporter.core.model import CredentialUnavailable
    from exporter.demo.simulator import Mode
    from exporter.storage.credentials import CachedCredentials

    class Down:
        down = False

        async def get(self, org_id, ref):
            if self.down:
                raise CredentialUnavailable("vault lookup failed: ConnectionRefusedError")
            return SecretStr("t")

        def forget(self, org_id, ref) -> None:
            pass

    state, base = sim
    state.modes["down"] = Mode("server_error")
    vault = Down()
    config = {"url": f"{base}/http/down", "method": "GET", "auth": "bearer"}
    store = MemoryStore([Integration(ORG, "http", config, "ref")])
    settings = settings_for("postgresql://unused", check_interval=900)
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session,  # type: ignore[arg-type]
                                  credentials=CachedCredentials(vault, ttl=0, stale_s=0))
        await services.scheduler.run_cycle(SLOT, SLOT)  # the vendor is down: unreachable, 1 failure
        vault.down = True
        await services.scheduler.run_cycle(SLOT + timedelta(hours=1), SLOT + timedelta(hours=1))
    last = services.snapshot.results[(ORG, "http")]
    assert (last.result.status.value, last.result.reason.value) == ("unreachable", "http_5xx"), "the vendor's story"
    assert last.state.consecutive_failures == 1
    assert services.instruments.not_checked.labels("credential_unavailable")._value.get() == 1
    assert len([k for k in store.slots if k[:2] == (ORG, "http")]) == 1, "no history row for a check not made"


@pytest.mark.parametrize("interval", [10**12, -5, 0, "soon"])
def test_an_interval_the_config_refuses_still_leaves_the_integration_due_so_its_error_is_reported(interval) -> None:
    from exporter.core.policy import interval_for

    assert interval_for(Integration(ORG, "http", {"check_interval_seconds": interval}), 900, {}) == 900


def test_a_5xx_retry_after_obeys_the_unreachable_cap_and_a_429_its_own() -> None:
    from exporter.core.model import HealthStatus, Reason, make_result
    from exporter.core.policy import after_check

    day = 86400.0
    down = make_result(HealthStatus.UNREACHABLE, 0, SLOT, "503", Reason.HTTP_5XX, retry_after_s=day)
    throttled = make_result(HealthStatus.DEGRADED, 0, SLOT, "429", Reason.RATE_LIMITED, retry_after_s=day)
    assert after_check(None, down, SLOT, 900, rng=lambda: 0.0).next_check_at == SLOT + timedelta(hours=1)
    assert after_check(None, throttled, SLOT, 900, rng=lambda: 0.0).next_check_at == SLOT + timedelta(days=1)


async def test_the_snapshot_shows_results_as_checks_finish_before_the_cycle_ends(sim) -> None:
    state, base = sim
    fast, stuck = UUID(int=1), UUID(int=2)
    store = MemoryStore([Integration(fast, "http", {"url": f"{base}/http/ok", "method": "GET"}),
                         Integration(stuck, "http", {"url": f"{base}/http/stuck", "method": "GET"})])
    settings = settings_for("postgresql://unused", check_interval=900)  # checks time out after 2 s
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        first = await services.scheduler.run_cycle(SLOT, SLOT)
        state.modes["stuck"] = Mode("hang")
        at = SLOT + timedelta(minutes=15)
        cycle = asyncio.create_task(services.scheduler.run_cycle(at, at))
        await wait_until(lambda: services.snapshot.results[(fast, "http")] not in first, what="the fast result")
        assert not cycle.done() and services.snapshot.results[(stuck, "http")] in first, "the hang still runs"
        results = await cycle
    assert services.snapshot.results[(fast, "http")] in results
    assert services.snapshot.results[(stuck, "http")].result.reason == Reason.TIMEOUT
    assert all(r in results for r in store.status.values())


async def test_an_organisation_whose_checks_are_all_in_is_persisted_while_a_hanging_one_still_runs(sim,
                                                                                                  monkeypatch) -> None:
    """The persist overlaps the hanging checks' timeout instead of trailing it (engine/handoff.py); each result
    is persisted and counted once, the hanging organisation's after the slot's incident decision."""
    monkeypatch.setattr("exporter.engine.handoff.EARLY_BATCH", 1)
    state, base = sim
    state.modes["stuck"] = Mode("hang")
    fast, stuck = UUID(int=1), UUID(int=2)
    store = MemoryStore([Integration(stuck, "http", {"url": f"{base}/http/stuck", "method": "GET"}),
                         Integration(fast, "http", {"url": f"{base}/http/ok", "method": "GET"})])
    settings = settings_for("postgresql://unused", check_interval=900)  # checks time out after 2 s
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        cycle = asyncio.create_task(services.scheduler.run_cycle(SLOT, SLOT))
        await wait_until(lambda: (fast, "http") in store.status, what="the fast organisation's row")
        assert not cycle.done() and (stuck, "http") not in store.status, "the hang still runs"
        results = await cycle
    assert {k: r.result.reason for k, r in store.status.items()} == {(fast, "http"): None,
                                                                      (stuck, "http"): Reason.TIMEOUT}
    assert sorted(k[:2] for k in store.slots) == [(fast, "http"), (stuck, "http")] and len(results) == 2
    counted = {s.labels["status"]: s.value for s in services.instruments.checks.collect()[0].samples
               if s.name.endswith("_total")}
    assert counted == {"healthy": 1.0, "unreachable": 1.0}, "each result counted once"


class Held(Vendor):
    """A scripted vendor whose next check waits until released (`entered` says it began)."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.entered, self.release, self.holding = asyncio.Event(), asyncio.Event(), False

    async def check(self, org_id, config):
        if self.holding:
            self.holding = False
            self.entered.set()
            await self.release.wait()
        return await super().check(org_id, config)


async def test_a_run_now_while_the_cycle_checks_the_same_integration_loses_no_failure() -> None:
    day = Day(Held)
    vendor = day.vendor
    assert isinstance(vendor, Held)
    await failing_since(day, [0])
    vendor.holding = True
    day.now = at(15)
    cycle = asyncio.create_task(day.services.scheduler.run_cycle(day.now, day.now))
    await asyncio.wait_for(vendor.entered.wait(), 30)  # the cycle's check began from 1 failure
    await day.services.scheduler.run_health_checks(ORG)
    assert day.services.snapshot.results[KEY].state.consecutive_failures == 2
    vendor.release.set()
    await cycle
    assert day.services.snapshot.results[KEY].state.consecutive_failures == 3, "the run-now's failure counts"
    assert day.store.status[KEY].state.consecutive_failures == 3


async def test_a_run_now_counts_the_cycles_failure_held_back_for_the_incident_decision() -> None:
    """A vendor type's infrastructure failure is shown only with the slot's incident decision; a "test
    connection" in between must still follow it, or two failures count as one (final review)."""
    day = Day(vendor_incident_types=frozenset({"http"}))
    await failing_since(day, [0])
    scheduler = day.services.scheduler
    real, reached, resume = scheduler.runner.batches, asyncio.Event(), asyncio.Event()

    async def paused(integrations, **kwargs):  # the cycle stops after its last batch, before the decision
        async with contextlib.aclosing(real(integrations, **kwargs)) as inner:
            async for batch in inner:
                yield batch
        reached.set()
        await resume.wait()
    scheduler.runner.batches = paused
    day.now = at(15)
    cycle = asyncio.create_task(scheduler.run_cycle(day.now, day.now))
    await asyncio.wait_for(reached.wait(), 30)
    scheduler.runner.batches = real
    assert day.services.snapshot.results[KEY].state.consecutive_failures == 1, "held back, not shown"
    day.now = at(15) + timedelta(seconds=30)
    await scheduler.run_health_checks(ORG)
    assert day.services.snapshot.results[KEY].state.consecutive_failures == 3
    resume.set()
    await cycle
    assert day.services.snapshot.results[KEY].state.consecutive_failures == 3
    assert day.store.status[KEY].state.consecutive_failures == 3


async def test_a_cycle_that_fails_while_checks_run_stops_them_before_it_ends(monkeypatch) -> None:
    day = Day()
    other = UUID(int=7)
    day.store.integrations.append(Integration(other, "http", {"url": "https://vendor.example/health"}))
    scheduler, ended = day.services.scheduler, []
    forever = asyncio.Event()

    async def run_one(integration: Integration):
        if integration.org_id == other:
            try:
                await forever.wait()
            finally:
                ended.append("hanging check")
        return make_result(HealthStatus.HEALTHY, 1, day.now)

    def broken(*args):
        raise RuntimeError("a bug while stating a result")

    monkeypatch.setattr(scheduler.runner, "_run_one", run_one)
    monkeypatch.setattr(scheduler, "_stated", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        await scheduler.run_cycle(at(0), at(0))
    assert ended == ["hanging check"], "cancelled and awaited, not left running"


def test_an_unchanged_row_is_kept_as_the_object_held_and_a_changed_or_new_one_is_taken_as_loaded() -> None:
    from dataclasses import replace

    from exporter.engine.scheduler import reuse_unchanged

    other = UUID("77777777-7777-4777-8777-777777777777")
    held = [Integration(ORG, "http", {"url": "https://a.example/"}), Integration(other, "http", {"url": "https://b/"})]
    loaded = [replace(held[0], config=dict(held[0].config)), replace(held[1], config={"url": "https://c/"}),
              Integration(ORG, "fiken", {})]
    kept = reuse_unchanged(held, loaded)
    assert kept == loaded
    assert [a is b for a, b in zip(kept, held[:1] + loaded[1:], strict=True)] == [True, True, True]


async def test_equal_states_after_a_cycle_are_one_object(sim) -> None:
    _, base = sim
    orgs = [UUID(int=n) for n in range(1, 4)]
    store = MemoryStore([Integration(o, "http", {"url": f"{base}/http/t{n}", "method": "GET"})
                         for n, o in enumerate(orgs)])
    async with loopback_session() as session:
        services = build_services(settings_for("postgresql://unused", check_interval=900), store=store,
                                  session=session)  # type: ignore[arg-type]
        results = await services.scheduler.run_cycle(SLOT, SLOT)
    assert [r.result.status for r in results] == [HealthStatus.HEALTHY] * 3
    assert len({id(r.state) for r in results}) == 1
    assert results[0].state == CheckState(next_check_at=SLOT + timedelta(minutes=15))


async def test_a_cycle_that_changed_no_mode_keeps_the_modes_and_the_keys_held(sim) -> None:
    """What a cycle replaces with an equal copy lives until the next one, for the full collection after it to
    walk (engine/heap.py): equal modes stay the mapping held, and the journal names the keys held."""
    _, base = sim
    store = MemoryStore([Integration(UUID(int=n), "http", {"url": f"{base}/http/t{n}", "method": "GET"})
                         for n in range(1, 4)])
    async with loopback_session() as session:
        services = build_services(settings_for("postgresql://unused", check_interval=900), store=store,
                                  session=session)  # type: ignore[arg-type]
        await services.scheduler.run_cycle(SLOT, SLOT)
        snapshot = services.snapshot
        modes, keys, seen = snapshot.modes, {id(k) for k in snapshot.results}, snapshot.version
        await services.scheduler.run_cycle(SLOT + timedelta(minutes=15), SLOT + timedelta(minutes=15))
    assert snapshot.modes is modes
    assert len(snapshot.changed_since(seen)) == 3
    assert {id(k) for batch in snapshot.changes_since(seen) for k in batch} == keys


class OneHangs(Vendor):
    """A scripted vendor: healthy, but the check of `HUNG` waits until cancelled (`cut` says it was)."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.status, self.cut = HealthStatus.HEALTHY, asyncio.Event()

    async def check(self, org_id, config):
        if org_id == HUNG:
            try:
                await asyncio.Event().wait()
            finally:
                self.cut.set()
        return await super().check(org_id, config)


HUNG = UUID(int=9)


@pytest.mark.parametrize("write_ends", [True, False], ids=["write-ends-in-the-grace", "write-hangs"])
async def test_a_cycle_cut_at_the_shutdown_grace_keeps_its_early_writes_and_leaves_nothing_running(
        monkeypatch, write_ends: bool) -> None:
    """The early hand-off's writes are no part of the cycle's task: cancelling the cycle neither cuts nor repeats
    them. A write that ends within the exit's flush lands; one that hangs is cut by Outbox.close(), its results
    still queued (the exit reports them). Either way nothing of the outbox's or the hand-off's still runs after
    close, and the results handed early are counted once."""
    from exporter.web.api import Runtime
    from exporter.web.app import shutdown

    monkeypatch.setattr("exporter.engine.handoff.EARLY_BATCH", 1)
    day = Day(OneHangs)
    day.store.integrations.append(Integration(HUNG, "http", {"url": "https://vendor.example/health"}))
    services, vendor = day.services, day.vendor
    assert isinstance(vendor, OneHangs)
    writing, gate, persisted = asyncio.Event(), asyncio.Event(), day.store.persist

    async def gated(results, slot):
        writing.set()
        await gate.wait()
        await persisted(results, slot)
    monkeypatch.setattr(day.store, "persist", gated)
    before = asyncio.all_tasks()
    retry = asyncio.create_task(services.outbox.retry_forever())
    cycle = services.scheduler.cycle_task = asyncio.create_task(services.scheduler.run_cycle(at(0), at(0)))
    await asyncio.wait_for(writing.wait(), 30)  # ORG's result handed early, its write under way; HUNG's check hangs
    assert not cycle.done() and not day.store.status

    async def opens_when_cut() -> None:  # the write ends only once the cycle is cut: after the grace
        await vendor.cut.wait()
        gate.set()
    opener = asyncio.create_task(opens_when_cut()) if write_ends else None
    await shutdown(services, Runtime(), retry, grace_s=0.05)
    assert cycle.cancelled() and vendor.cut.is_set()
    if opener is not None:
        await opener
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert not left, f"still running after Outbox.close(): {left}"
    if write_ends:
        assert list(day.store.status) == [KEY] and services.outbox.pending == 0, "the early write landed"
    else:
        assert not day.store.status and services.outbox.pending == 1, "cut, but still queued and reported"
    counted = {s.labels["status"]: s.value for s in services.instruments.checks.collect()[0].samples
               if s.name.endswith("_total")}
    assert counted == {"healthy": 1.0}, "counted once, when handed early; the hanging check never came in"


async def test_a_cycle_caps_the_slow_checks_so_they_end_with_the_others_by_last_cycles_seconds() -> None:
    """Six integrations took 10 s last time, forty 0.5 s (20 s in all), and one is new (counted as their mean):
    on 8 slots (9 less the one kept for run-now checks), 6 slow ones at once end with the others (~10.5 s);
    half the slots (the fixed cap before) would have given them a second round. The runner gets the planned
    cap, and the slowest start first."""
    day = Day(max_concurrency=9)
    orgs = [UUID(int=n) for n in range(1, 48)]
    day.store.integrations[:] = [Integration(o, "http", {"url": "https://vendor.example/health"}) for o in orgs]
    day.services.snapshot.update(
        IntegrationResult(o, "http", make_result(HealthStatus.HEALTHY, 10_000 if n < 6 else 500, at(-15)),
                          CheckState(next_check_at=at(0)))
        for n, o in enumerate(orgs[:-1]))
    runner, seen = day.services.scheduler.runner, []
    real = runner.batches

    def noting(integrations, **kwargs):
        seen.append((kwargs, [i.org_id for i in integrations[:6]]))
        return real(integrations, **kwargs)
    runner.batches = noting
    assert await day.cycle(0) == 47
    assert seen == [({"slow": 6, "slow_slots": 6, "slots": 8}, orgs[:6])]  # all 8: fewer than the base 256


async def test_a_cycle_uses_only_the_slots_its_checks_need() -> None:
    """Last cycle's seconds (300 checks of 0.5 s: 150 s, 15 slots within the 10 s timeout) ask for fewer
    slots than EXPORTER_MAX_CONCURRENCY's 600: the cycle uses the base 256, so its answers come in smaller
    bursts (shorter loop turns)."""
    day = Day(max_concurrency=600)
    orgs = [UUID(int=n) for n in range(1, 301)]
    day.store.integrations[:] = [Integration(o, "http", {"url": "https://vendor.example/health"}) for o in orgs]
    day.services.snapshot.update(
        IntegrationResult(o, "http", make_result(HealthStatus.HEALTHY, 500, at(-15)), CheckState(next_check_at=at(0)))
        for o in orgs)
    runner, seen = day.services.scheduler.runner, []
    real = runner.batches

    def noting(integrations, **kwargs):
        seen.append(kwargs["slots"])
        return real(integrations, **kwargs)
    runner.batches = noting
    assert await day.cycle(0) == 300
    assert seen == [256]


def noting_slots(day: Day) -> list[dict]:
    runner, seen = day.services.scheduler.runner, []
    real = runner.batches

    def noting(integrations, **kwargs):
        seen.append({k: kwargs[k] for k in ("slots", "slow_slots")})
        return real(integrations, **kwargs)
    runner.batches = noting
    return seen


async def test_a_new_fleets_first_cycle_plans_its_unknown_checks_at_a_typical_answers_time() -> None:
    """Nothing known yet: 300 checks at concurrency.UNKNOWN_S (0.25 s) are 75 s, 8 slots: the base 256 of 600."""
    day = Day(max_concurrency=600)
    day.store.integrations[:] = [Integration(UUID(int=n), "http", {"url": "https://vendor.example/health"})
                                 for n in range(1, 301)]
    seen = noting_slots(day)
    assert await day.cycle(0) == 300
    assert seen == [{"slots": 256, "slow_slots": None}]


async def test_a_planted_latency_is_planned_as_at_most_the_timeout() -> None:
    """A passive result's latency is the tenant's own sync report's (a 30-day "run": 2**31 - 1 ms). Planned
    as it is, it asked for every slot and left the six hanging checks two; as the timeout it changes nothing."""
    day = Day(max_concurrency=600)
    orgs = [UUID(int=n) for n in range(1, 302)]
    day.store.integrations[:] = [Integration(o, "http", {"url": "https://vendor.example/health"}) for o in orgs]
    latency = {0: 2**31 - 1, **{n: 10_000 for n in range(1, 7)}}
    day.services.snapshot.update(
        IntegrationResult(o, "http", make_result(HealthStatus.HEALTHY, latency.get(n, 60), at(-15)),
                          CheckState(next_check_at=at(0)))
        for n, o in enumerate(orgs))
    seen = noting_slots(day)
    assert await day.cycle(0) == 301
    assert seen == [{"slots": 256, "slow_slots": 7}]


async def test_a_run_now_during_a_cycle_that_needs_every_slot_is_not_held_up_by_it() -> None:
    """The cycle's checks all hang and ask for every slot; a run-now meanwhile still gets one of the slots
    run_slots keeps back (a "test connection" must not wait for a 100,000 cycle)."""
    release, entered = asyncio.Event(), asyncio.Event()

    class Hanging(Vendor):
        async def check(self, org_id, config):
            if org_id != ORG:
                entered.set()
                await release.wait()
            return await super().check(org_id, config)

    day = Day(Hanging, max_concurrency=4)
    others = [Integration(UUID(int=n), "http", {"url": "https://vendor.example/health"}) for n in range(1, 9)]
    day.store.integrations[:] = [*others, Integration(ORG, "http", {"url": "https://vendor.example/health"})]
    day.services.snapshot.update(
        IntegrationResult(i.org_id, "http", make_result(HealthStatus.HEALTHY, 10_000, at(-15)),
                          CheckState(next_check_at=at(0))) for i in others)
    seen = noting_slots(day)
    day.now = at(0)
    cycle = asyncio.create_task(day.services.scheduler.run_cycle(day.now, day.now))
    try:
        await asyncio.wait_for(entered.wait(), 30)
        async with asyncio.timeout(30):  # would wait for the cycle's hanging checks without the kept slot
            [checked] = await day.services.scheduler.run_health_checks(ORG)
        assert checked.org_id == ORG and seen[0]["slots"] == 3
    finally:
        release.set()
        await cycle
