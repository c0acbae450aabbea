"""Vendor-wide incidents in the real scheduler, over the simulator and an in-memory store: only canaries are
checked while one lasts, everything the moment they recover, and one organisation's own failure stays its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID

from exporter.core.incidents import INFRA_REASONS
from exporter.core.model import HealthStatus, Integration
from exporter.demo.simulator import Mode
from exporter.services import build_services
from exporter.web.metrics import Exposition
from tests.helpers import gauges, settings_for
from tests.support.fakes import loopback_session
from tests.support.memory_store import MemoryStore

SLOT = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
ORGS = [UUID(int=n + 1) for n in range(12)]
LONER = UUID("77777777-7777-4777-8777-777777777777")

VENDOR = frozenset({"http"})  # the simulator's http target stands for one vendor here (not by default: its own test)


def slot(n: int) -> datetime:
    return SLOT + timedelta(minutes=15 * n)


def fleet(base: str) -> list[Integration]:
    """Twelve organisations on one vendor (one simulator tenant), one on a vendor of its own."""
    return ([Integration(o, "http", {"url": f"{base}/http/vendor", "method": "GET"}) for o in ORGS]
            + [Integration(LONER, "http", {"url": f"{base}/http/loner", "method": "GET"})])


def gauge(services, name: str, kind: str = "http") -> float | None:
    return services.instruments.registry.get_sample_value(name, {"integration_type": kind})


async def test_by_default_tenants_pointing_plain_http_at_dead_hosts_pause_and_silence_no_one(sim) -> None:
    """The attack on the incident rule: twelve tenants' own http URLs fail as infrastructure. Plain http has
    no shared vendor, so the service declares nothing: everyone is checked and alerted on as their own."""
    state, base = sim
    store = MemoryStore(fleet(base))
    async with loopback_session() as session:
        services = build_services(settings_for("postgresql://unused", check_interval=900), store=store,
                                  session=session)  # type: ignore[arg-type]
        state.modes["vendor"] = Mode("server_error")
        assert len(await services.scheduler.run_cycle(slot(0), slot(0))) == 13
        for n in range(3):  # (later slots check those due after their own backoff: no canaries, no holding)
            if n:
                await services.scheduler.run_cycle(slot(n), slot(n))
            assert services.scheduler.vendors.ongoing == {}
    assert gauge(services, "integration_health_vendor_incident") in (None, 0)
    assert all(r.result.vendor_incident_since is None for r in store.status.values())


async def test_an_outage_of_many_organisations_is_one_incident_checked_through_three_canaries(sim) -> None:
    state, base = sim
    store = MemoryStore(fleet(base))
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        scheduler = services.scheduler
        state.modes["vendor"] = Mode("server_error")
        await scheduler.run_cycle(slot(0), slot(0))
        assert scheduler.vendors.ongoing == {"http": slot(0)}
        assert gauge(services, "integration_health_vendor_incident") == 1
        assert gauge(services, "integration_health_vendor_failing_ratio") == 12 / 13
        assert all(store.status[(o, "http")].result.vendor_incident_since == slot(0) for o in ORGS)
        assert store.status[(LONER, "http")].result.vendor_incident_since is None, "a healthy result is its own"
        assert all(store.slots[(o, "http", slot(0))].result.vendor_incident_since == slot(0) for o in ORGS)

        for n in (1, 2, 3):
            before = state.requests.get("vendor", 0)
            checked = await scheduler.run_cycle(slot(n), slot(n))
            assert state.requests["vendor"] - before == 3
            assert len(checked) == 3, "only the canaries, whatever their backoff"
            assert all(r.result.vendor_incident_since == slot(0) for r in checked)
        assert scheduler.vendors.ongoing == {"http": slot(0)}
        assert state.requests.get("loner") == 1, "the healthy bystander of the same type is held too"
        held = [k for k in store.status if (*k, slot(3)) not in store.slots]
        assert len(held) == 10 and all(store.status[k].result.vendor_incident_since == slot(0) for k in held)
        assert all(store.status[k].state.next_check_at >= slot(4) for k in held), "held, not forgotten (stale)"
        not_run = services.instruments.registry.get_sample_value("integration_health_checks_not_run_total",
                                                                 {"cause": "vendor_incident"})
        assert not_run == 30

        state.modes["vendor"] = Mode("healthy")
        before = state.requests["vendor"]
        checked = await scheduler.run_cycle(slot(4), slot(4))
        assert state.requests["vendor"] - before == 12 and state.requests["loner"] == 2, "all, in this very cycle"
        assert len(checked) == 13 and {r.result.status for r in checked} == {HealthStatus.HEALTHY}
        assert scheduler.vendors.ongoing == {}
        assert gauge(services, "integration_health_vendor_incident") == 0
        assert gauge(services, "integration_health_vendor_failing_ratio") == 0
        assert all(r.result.vendor_incident_since is None for r in store.status.values())


async def test_the_incident_survives_a_restart_with_its_start(sim) -> None:
    state, base = sim
    store = MemoryStore(fleet(base))
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    state.modes["vendor"] = Mode("server_error")
    async with loopback_session() as session:
        first = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        await first.scheduler.run_cycle(slot(0), slot(0))
        after = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        after.scheduler.restore(await store.last_results())
        assert gauge(after, "integration_health_vendor_incident") == 1
        checked = await after.scheduler.run_cycle(slot(1), slot(1))
    assert len(checked) == 3 and after.scheduler.vendors.ongoing == {"http": slot(0)}


async def test_an_incident_stored_for_a_type_no_longer_judged_is_not_restored(sim) -> None:
    """Rows flagged with an http incident before http was left out of the vendor types: the upgraded service
    neither raises the vendor gauge at start (a false IntegrationVendorOutage page) nor holds anyone (final review)."""
    state, base = sim
    store = MemoryStore(fleet(base))
    state.modes["vendor"] = Mode("server_error")
    async with loopback_session() as session:
        before = build_services(settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR),
                                store=store, session=session)  # type: ignore[arg-type]
        await before.scheduler.run_cycle(slot(0), slot(0))
        assert any(r.result.vendor_incident_since for r in store.status.values())
        after = build_services(settings_for("postgresql://unused", check_interval=900), store=store,
                               session=session)  # type: ignore[arg-type]
        after.scheduler.restore(await store.last_results())
        assert after.scheduler.vendors.ongoing == {} and gauge(after, "integration_health_vendor_incident") in (None, 0)


async def test_one_organisations_rejected_credentials_while_the_vendor_is_healthy_stay_its_own(sim) -> None:
    state, base = sim
    store = MemoryStore(fleet(base))
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    state.modes["loner"] = Mode("unauthorized")
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        for n in range(3):
            await services.scheduler.run_cycle(slot(n), slot(n))
    assert services.scheduler.vendors.ongoing == {}
    loner = store.status[(LONER, "http")].result
    assert (loner.status, loner.vendor_incident_since) == (HealthStatus.DEGRADED, None)
    assert state.requests["vendor"] == 36, "no incident: everyone checked every cycle"


async def test_few_organisations_failing_together_are_no_incident(sim) -> None:
    state, base = sim
    store = MemoryStore(fleet(base)[:4])  # four organisations: below the default of five
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    state.modes["vendor"] = Mode("server_error")
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        await services.scheduler.run_cycle(slot(0), slot(0))
    assert services.scheduler.vendors.ongoing == {}
    assert all(r.result.vendor_incident_since is None for r in store.status.values())


async def test_test_connection_during_an_incident_checks_what_it_is_asked_and_says_so(sim) -> None:
    state, base = sim
    store = MemoryStore(fleet(base))
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    state.modes["vendor"] = Mode("server_error")
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        await services.scheduler.run_cycle(slot(0), slot(0))
        before = state.requests["vendor"]
        (result,) = await services.scheduler.run_health_checks(ORGS[5])
    assert state.requests["vendor"] == before + 1
    assert result.result.vendor_incident_since == slot(0) and result.result.status == HealthStatus.UNREACHABLE


async def test_an_hourly_type_is_held_on_its_own_interval_and_all_of_it_rechecked_on_recovery(sim) -> None:
    state, base = sim
    store = MemoryStore(fleet(base))
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR, type_intervals={"http": 3600})
    hour = SLOT.replace(minute=0)
    state.modes["vendor"] = Mode("server_error")
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        scheduler = services.scheduler
        await scheduler.run_cycle(hour, hour)
        for quarter in (1, 2, 3):  # nothing of the type is due: nothing checked, nothing counted as held back
            at = hour + timedelta(minutes=15 * quarter)
            assert await scheduler.run_cycle(at, at) == []
        assert scheduler.vendors.ongoing == {"http": hour}
        not_run = services.instruments.registry.get_sample_value("integration_health_checks_not_run_total",
                                                                 {"cause": "vendor_incident"})
        assert not_run == 1, "only the bystander, once, so its status row carries the flag"
        state.modes["vendor"] = Mode("healthy")
        checked = await scheduler.run_cycle(hour + timedelta(hours=1), hour + timedelta(hours=1))
    assert len(checked) == 13 and scheduler.vendors.ongoing == {}
    assert all(r.result.vendor_incident_since is None for r in store.status.values())


async def test_an_incident_is_judged_on_the_whole_fleet_every_hour(sim) -> None:
    """Canaries alone never keep an incident for more than an hour: then every integration of the type is
    checked and the incident is declared again only if the fleet still fails (its start kept)."""
    state, base = sim
    store = MemoryStore(fleet(base))
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    async with loopback_session() as session:
        scheduler = build_services(settings, store=store, session=session).scheduler  # type: ignore[arg-type]
        state.modes["vendor"] = Mode("server_error")
        await scheduler.run_cycle(slot(0), slot(0))
        for n in (1, 2, 3):
            assert len(await scheduler.run_cycle(slot(n), slot(n))) == 3
        assert len(await scheduler.run_cycle(slot(4), slot(4))) == 13, "the hourly full check"
        assert scheduler.vendors.ongoing == {"http": slot(0)}, "still down for everyone: the same incident"
        assert len(await scheduler.run_cycle(slot(5), slot(5))) == 3, "then the canaries again"


async def test_a_maintenance_window_over_every_organisation_is_no_vendor_outage(sim) -> None:
    """Planned vendor work, announced as a global window: many organisations fail inside it, flagged; that is no
    vendor-wide incident (its alert groups by type, so the per-integration `unless` could not silence it)."""
    from uuid import uuid4

    from exporter.core.maintenance import Window

    state, base = sim
    store = MemoryStore(fleet(base))
    # results carry the real clock's checked_at: a window around it
    store.windows = [Window(uuid4(), None, "http", slot(0), datetime.now(UTC) + timedelta(days=1), "vendor upgrade")]
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        state.modes["vendor"] = Mode("server_error")
        checked = await services.scheduler.run_cycle(slot(0), slot(0))
        assert len(checked) == 13 and all(r.maintenance for r in checked)
        assert services.scheduler.vendors.ongoing == {}
        assert gauge(services, "integration_health_vendor_incident") == 0
        assert gauge(services, "integration_health_vendor_failing_ratio") == 0


def paused_after_checks(runner, reached: asyncio.Event, resume: asyncio.Event):
    """The runner's batches, then a pause before they end: the cycle has shown all it shows mid-cycle."""
    real = runner.batches

    async def batches(integrations, **kwargs):
        async with contextlib.aclosing(real(integrations, **kwargs)) as inner:
            async for batch in inner:
                yield batch
        reached.set()
        await resume.wait()
    return batches


def infra_failures_shown(text: str) -> set[str]:
    """Organisations whose exposition says they fail for a reason every organisation would share."""
    reasons = {r.value for r in INFRA_REASONS}
    return {dict(labels)["org_id"] for labels, v in gauges(text).get("integration_health_failure_reason", {}).items()
            if v == 1 and dict(labels)["reason"] in reasons}


async def test_an_outage_shows_no_infrastructure_failure_mid_cycle_before_its_incident_is_declared(sim,
                                                                                                  monkeypatch) -> None:
    state, base = sim
    store = MemoryStore(fleet(base))
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        scheduler = services.scheduler
        exposition = Exposition(services.instruments, services.snapshot, clock=lambda: slot(1))
        first = await scheduler.run_cycle(slot(0), slot(0))
        reached, resume = asyncio.Event(), asyncio.Event()
        monkeypatch.setattr(scheduler.runner, "batches", paused_after_checks(scheduler.runner, reached, resume))
        state.modes["vendor"] = Mode("server_error")
        cycle = asyncio.create_task(scheduler.run_cycle(slot(1), slot(1)))
        await asyncio.wait_for(reached.wait(), 30)
        text = exposition.render().decode()
        assert gauges(text)["integration_health_vendor_incident"][(("integration_type", "http"),)] == 0
        assert infra_failures_shown(text) == set(), "an unflagged outage would page every organisation"
        assert services.snapshot.results[(LONER, "http")] not in first, "the healthy still show as they come"
        resume.set()
        await cycle
        text = exposition.render().decode()
    assert gauges(text)["integration_health_vendor_incident"][(("integration_type", "http"),)] == 1
    assert infra_failures_shown(text) == {str(o) for o in ORGS}
    assert all(services.snapshot.results[(o, "http")].result.vendor_incident_since == slot(1) for o in ORGS)


async def test_the_recovery_cycles_second_run_persists_and_counts_each_result_once(sim, monkeypatch) -> None:
    """The canaries and, once they recovered, the rest run through one early hand-off (Scheduler.check_active): the
    canaries handed early are neither written nor counted again at the decision, the held organisations go once,
    whole, at the end, and nothing is left out."""
    monkeypatch.setattr("exporter.engine.handoff.EARLY_BATCH", 1)  # every organisation goes as soon as it is in
    state, base = sim
    store = MemoryStore(fleet(base))
    settings = settings_for("postgresql://unused", check_interval=900, vendor_incident_types=VENDOR)
    state.modes["vendor"] = Mode("server_error")
    async with loopback_session() as session:
        services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
        scheduler, outbox, instruments = services.scheduler, services.outbox, services.instruments
        await scheduler.run_cycle(slot(0), slot(0))
        assert len(await scheduler.run_cycle(slot(1), slot(1))) == 3, "the canaries only"
        submitted, observed, submit, observe = Counter(), Counter(), outbox.submit, instruments.observe

        async def counting_submit(results, at):
            submitted.update((r.org_id_key(), at) for r in results)
            return await submit(results, at)

        def counting_observe(results):
            observed.update(r.org_id_key() for r in results)
            observe(results)
        monkeypatch.setattr(outbox, "submit", counting_submit)
        monkeypatch.setattr(instruments, "observe", counting_observe)
        state.modes["vendor"] = Mode("healthy")
        checked = await scheduler.run_cycle(slot(2), slot(2))
    everyone = {key: 1 for key in store.status}
    assert len(checked) == 13 and len(everyone) == 13 and scheduler.vendors.ongoing == {}
    assert submitted == Counter({(key, slot(2)): 1 for key in everyone}), "each persisted once, in the slot"
    assert observed == Counter(everyone), "each counted once"
    assert all(store.slots[(*key, slot(2))].result.status == HealthStatus.HEALTHY for key in everyone)
