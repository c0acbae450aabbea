"""A scripted day through the real service: build_services over a MemoryStore and the loopback simulator,
a fake clock, a cycle every 15 minutes, and one scrape a minute of what /metrics would have served.

Each minute: apply the scenario's events, run the cycle when a slot starts (`run_cycle(slot, slot)`),
then render the exposition from the snapshot and the instruments. A restart drops the process (its
snapshot and counters) for a few minutes, during which scrapes fail; the new process is built afresh,
restored from the store's last results and runs the current slot's cycle at once, as `serve` does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from exporter.core import policy
from exporter.core.maintenance import Window
from exporter.core.model import CredentialUnavailable, Integration
from exporter.core.syncs import SyncRun
from exporter.demo.simulator import FAKES, Mode, SimState
from exporter.demo.simulator import create_app as create_simulator
from exporter.services import Services, build_services
from exporter.settings import Settings
from exporter.storage.credentials import CachedCredentials
from exporter.web.metrics import Exposition
from tests.support.fakes import StaticCredentials, loopback_session
from tests.support.memory_store import MemoryStore

T0 = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)  # the day spans Europe/Oslo's autumn change (25 Oct, 01:00 UTC)
DAY = 24 * 60
CYCLE = 15
VICTIM_ORG = UUID("aaaaaaaa-0000-4000-8000-00000000000a")
BYSTANDER_ORG = UUID("bbbbbbbb-0000-4000-8000-00000000000b")
VICTIM = {"org_id": str(VICTIM_ORG), "integration_type": "http"}
SLOW_MS, THRESHOLD_MS = 1500, 1000  # real slowness, well clear of a healthy loopback answer on a loaded machine


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


class Vault(StaticCredentials):
    """Static secrets that can be made unavailable, as a vault whose database is down."""

    down = False

    async def get(self, org_id: UUID, ref: str) -> SecretStr:
        if self.down:
            raise CredentialUnavailable("vault unavailable")
        return await super().get(org_id, ref)


@dataclass
class World:
    """What a scenario's events act on."""

    sim: SimState
    store: MemoryStore
    vault: Vault
    restart_gap: int = 0  # set by a restart event: minutes the exporter is down from now
    test_connections: list[UUID] = field(default_factory=list)  # "test connection" pressed for these orgs


Event = Callable[[World], None]


def vendor(mode: str, **options: Any) -> Event:
    """The victim's vendor answers in `mode` (a simulator fault mode) from now on."""
    return lambda w: w.sim.modes.__setitem__("victim", Mode(mode, **options))


def secret_expires() -> Event:
    """The victim's client secret expires: Entra ID refuses it (AADSTS7000222) and the access token issued
    with it stops working (within its hour; at once here, where the token cache runs on real time)."""
    def expire(w: World) -> None:
        w.sim.modes["victim"] = Mode("secret_expired")
        w.sim.issued.clear()
    return expire


def secret_renewed() -> Event:
    """The organisation's admin stores a new secret in the vault (the vendor accepts only it) and presses
    "test connection", as the runbook says."""
    def renew(w: World) -> None:
        w.vault.set("victim", "victim-secret-2")
        w.sim.secrets["victim"], w.sim.modes["victim"] = "victim-secret-2", Mode("healthy")
        w.test_connections.append(VICTIM_ORG)
    return renew


def credential_expires_in(days: int) -> Event:
    """The organisation's admin records the victim's secret's expiry in the vault, `days` from the day's start."""
    return lambda w: w.vault.expiries.__setitem__("victim", T0 + timedelta(days=days))


def database(down: bool) -> Event:
    return lambda w: setattr(w.store, "down", down)


def vault(down: bool) -> Event:
    return lambda w: setattr(w.vault, "down", down)


def restart(gap: int = 2) -> Event:
    """The exporter process dies now and serves again `gap` minutes later."""
    return lambda w: setattr(w, "restart_gap", gap)


def maintenance(start: int, end: int) -> Event:
    """The operator creates a maintenance window for the victim, from minute `start` until `end`."""
    window = Window(uuid4(), VICTIM_ORG, "http", at(start), at(end), "vendor maintenance")
    return lambda w: w.store.windows.append(window)


def sync_run(scheduled: int, started: int, finished: int, outcome: str = "success") -> Event:
    """The sync scheduler reports a run of the victim (minutes relative to the day's start)."""
    run = SyncRun(at(scheduled), outcome, at(started), at(finished))
    return lambda w: w.store.runs.setdefault((VICTIM_ORG, "http"), []).append(run)


@dataclass(frozen=True)
class Fault:
    """Something users must hear about exactly once: one of `alerts` for the victim, fired after `start`
    and resolved after `end` (the recovery)."""

    what: str
    start: int
    end: int
    alerts: frozenset[str]
    labels: Mapping[str, str] = field(default_factory=lambda: dict(VICTIM))
    max_fire: int = 32
    max_resolve: int = 61  # 16 when a sync success follows the recovery


@dataclass(frozen=True)
class Scenario:
    """A day's script: events by minute, the faults users must hear about, and how the victim is set up."""

    name: str
    events: Mapping[int, Sequence[Event]] = field(default_factory=dict)
    faults: Sequence[Fault] = ()
    victim: Mapping[str, Any] = field(default_factory=dict)  # Integration fields: health_mode, sync
    victim_type: str = "http"  # another type's config comes from its simulator fake
    seed_runs: Sequence[Event] = ()  # sync runs reported before the day starts
    pending: str | None = None  # the change elsewhere this scenario's target waits for
    peers: int = 0  # more organisations whose integration is on the victim's vendor: a vendor-wide outage


def peer_org(n: int) -> UUID:
    return UUID(f"cccccccc-0000-4000-8000-{n:012d}")


def integrations(base: str, victim: Mapping[str, Any], victim_type: str = "http", peers: int = 0
                 ) -> list[Integration]:
    def integration(org: UUID, tenant: str, kind: str = "http", **fields: Any) -> Integration:
        config = FAKES[kind].config(base, tenant) | {"degraded_latency_ms": THRESHOLD_MS}
        return Integration(org, kind, config, credential_ref=tenant, **fields)
    return [integration(VICTIM_ORG, "victim", victim_type, **victim), integration(BYSTANDER_ORG, "bystander"),
            *(integration(peer_org(n), "victim", victim_type) for n in range(peers))]


async def run_day(scenario: Scenario) -> list[str | None]:
    """Drive the real service through the scenario's day; the exposition text of each minute's scrape."""
    sim = SimState()
    server = TestServer(create_simulator(sim))
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        world = World(sim, MemoryStore(integrations(base, scenario.victim, scenario.victim_type, scenario.peers)),
                      Vault({"victim": "victim-secret", "bystander": "bystander-secret"}))
        return await _drive(scenario, world)
    finally:
        await server.close()


class Clock:
    """The fake clock every part of the service reads: the scripted minute."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def _drive(scenario: Scenario, world: World) -> list[str | None]:
    for event in scenario.seed_runs:
        event(world)
    clock = Clock()
    settings = Settings(database_url="memory://", credential_provider="none",  # the defaults otherwise, but
                        vendor_incident_types=frozenset({"http"}))  # the simulated http vendor is one vendor
    rng = random.Random(scenario.name).random
    scrapes: list[str | None] = []
    services: Services | None = None
    text: str | None = None
    down_until = 0
    async with loopback_session() as session:
        for minute in range(DAY):
            clock.now = now = at(minute)
            for event in scenario.events.get(minute, ()):
                event(world)
            if world.restart_gap:
                services, down_until, world.restart_gap = None, minute + world.restart_gap, 0
            if minute < down_until:
                scrapes.append(None)
                continue
            if services is None:  # a process starting: restore, then the current slot's cycle at once
                services = build_services(settings, store=world.store, session=session,  # type: ignore[arg-type]
                                          credentials=CachedCredentials(  # as production wraps its provider
                                              world.vault, settings.credential_cache_seconds,
                                              settings.credential_stale_seconds, lambda: clock().timestamp()),
                                          clock=clock, rng=rng)
                services.scheduler.restore(await world.store.last_results())
                exposition = Exposition(services.instruments, services.snapshot, clock=clock)
                await services.scheduler.run_cycle(policy.slot_start(now, settings.check_interval), now)
                text = None
            elif minute % CYCLE == 0:
                await services.scheduler.run_cycle(now, now)
                text = None
            elif services.outbox.pending:  # the outbox's retry loop: at most a minute apart
                await services.outbox.flush()
                text = None
            while world.test_connections:  # POST /api/v1/orgs/{org_id}/checks
                await services.scheduler.run_health_checks(world.test_connections.pop())
                text = None
            if text is None or exposition.stale(now):  # else nothing exported changed: the last render stands
                text = exposition.render().decode()
            scrapes.append(text)
    return scrapes
