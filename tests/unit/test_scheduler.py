"""The scheduler's decisions over a real runner and the simulator, with an in-memory store and a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import aiohttp
import pytest

from exporter.core.model import CheckState, Integration
from exporter.core.policy import throttle_fallback
from exporter.demo.simulator import Mode
from exporter.services import build_services
from tests.helpers import settings_for
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
    async with aiohttp.ClientSession() as session:
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
    async with aiohttp.ClientSession() as session:
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
    async with aiohttp.ClientSession() as session:
        services = build_services(settings, store=store, session=session,  # type: ignore[arg-type]
                                  credentials=StaticCredentials({"ref": vault_secret}))
        for n in range(3):
            await services.scheduler.run_cycle(SLOT + timedelta(minutes=15 * n), SLOT + timedelta(minutes=15 * n))
    assert store.status[(ORG, "dynamics365")].result.status.value == "healthy"
    assert (state.requests["d"], state.token_requests["d"]) == (3, 1)
