"""The composition root: Settings -> store, credentials, adapters, runner, scheduler. Nothing else builds these."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.adapters import ADAPTERS
from exporter.adapters.base import AdapterContext, AdapterSpec, build_adapters
from exporter.adapters.client import HttpClient
from exporter.adapters.transport import make_session, own_addresses
from exporter.core.egress import EgressPolicy
from exporter.core.model import CredentialProvider, Integration, utcnow
from exporter.engine.instruments import Instruments
from exporter.engine.leases import ShardLeases
from exporter.engine.notifier import Notifier
from exporter.engine.outbox import Outbox
from exporter.engine.runner import Runner
from exporter.engine.scheduler import Scheduler
from exporter.engine.snapshot import Snapshot
from exporter.engine.warmups import Warmer
from exporter.settings import Settings
from exporter.storage.credentials import CachedCredentials, DirectoryCredentials, SupabaseVaultCredentials
from exporter.storage.store import Store, create_pool
from exporter.storage.webhooks import Webhooks

log = logging.getLogger(__name__)
POOL_SIZE = 10
WEBHOOK_POOL_SIZE = 3


@dataclass
class Services:
    """Everything the service runs on, built once per process; the web layer and the CLI use it."""

    store: Store
    runner: Runner
    scheduler: Scheduler
    snapshot: Snapshot
    instruments: Instruments
    outbox: Outbox
    shards: ShardLeases | None = None  # None: this process checks every organisation
    warmer: Warmer | None = None  # warm-ups before scheduled syncs (its own task; see web/app.py)
    webhooks: Webhooks | None = None  # None: no database behind (tests of the web layer alone)
    notifier: Notifier | None = None  # the webhook delivery worker; None: nothing delivers here
    egress: EgressPolicy | None = None  # what tenants' URLs may reach (webhook subscriptions are judged by it)


def credential_provider(settings: Settings, pool: Any) -> CredentialProvider | None:
    """The provider EXPORTER_CREDENTIAL_PROVIDER names, behind a cache of EXPORTER_CREDENTIAL_CACHE_SECONDS."""
    if settings.credential_provider == "none":
        return None
    inner: CredentialProvider = (DirectoryCredentials(settings.credentials_dir) if settings.credentials_dir
                                 and settings.credential_provider == "directory" else SupabaseVaultCredentials(pool))
    return CachedCredentials(inner, ttl=settings.credential_cache_seconds, stale_s=settings.credential_stale_seconds)


def credentials_ahead(credentials: CredentialProvider, refresh_s: float, first: int = 1024
                      ) -> Callable[[Sequence[Integration]], contextlib.AbstractAsyncContextManager[None]]:
    """What the scheduler enters while checks run: their credentials read ahead in batches, and again every
    `refresh_s` until they are done (a cycle can outlast the cache's TTL: at 100,000 under load it takes
    minutes), so a cycle costs the store a query per few thousand integrations, not two each.

    Only the `first` pairs (the checks that start at once: the runner's window) are read before the checks
    start; the rest are read while the first checks run, in the order they are checked (a check that comes
    before its batch waits for it: CachedCredentials). At 100,000 the 50 batches took 3.3 s before any check."""
    @contextlib.asynccontextmanager
    async def ahead(integrations: Sequence[Integration]) -> AsyncIterator[None]:
        keys = [(i.org_id, i.credential_ref) for i in integrations if i.credential_ref]
        await _prefetch(credentials, keys[:first])
        helpers = [asyncio.create_task(_prefetch(credentials, keys[first:]))] if keys[first:] else []
        if keys and refresh_s > 0:
            helpers.append(asyncio.create_task(_keep_ahead(credentials, keys, refresh_s)))
        await asyncio.sleep(0)  # the rest's pairs noted as being read: a check's get waits for them, asks no query
        try:
            yield
        finally:
            for task in helpers:
                task.cancel()
            if helpers:
                await asyncio.wait(helpers)  # waits for them without swallowing a cancellation of the cycle
    return ahead


async def _prefetch(credentials: CredentialProvider, keys: list[tuple[Any, str]]) -> None:
    try:
        await credentials.prefetch(keys)
    except Exception:  # never a failed cycle: each check then reads its own, as without this
        log.exception("reading the cycle's credentials ahead failed")


async def _keep_ahead(credentials: CredentialProvider, keys: list[tuple[Any, str]], every_s: float) -> None:
    """Read the pairs ahead again while the checks run; the cache re-reads only those with less than half their
    TTL left, so with `every_s` a quarter of the TTL none expires before its check."""
    while True:
        await asyncio.sleep(every_s)
        await _prefetch(credentials, keys)


def type_intervals(settings: Settings, specs: Mapping[str, AdapterSpec]) -> dict[str, int]:
    """EXPORTER_TYPE_INTERVALS when set, else each registered type's own default (billed APIs less often)."""
    if settings.type_intervals is not None:
        return settings.type_intervals
    return {name: spec.interval_s for name, spec in specs.items() if spec.interval_s}


def vendor_types(specs: Mapping[str, AdapterSpec], chosen: frozenset[str] | None = None) -> frozenset[str]:
    """The types that can have a vendor-wide incident: the operator's choice, else those whose adapter reaches
    only its vendor's hosts (a type whose URL each tenant chooses has no shared vendor)."""
    if chosen is None:
        return frozenset(name for name, spec in specs.items() if spec.hosts is not None)
    if unknown := sorted(chosen - specs.keys()):
        raise ValueError(f"EXPORTER_VENDOR_INCIDENT_TYPES names unknown types {unknown}; known: {sorted(specs)}")
    return chosen


def build_services(settings: Settings, *, store: Store, session: HttpClient,
                   credentials: CredentialProvider | None = None, specs: Mapping[str, AdapterSpec] = ADAPTERS,
                   on_cycle: Callable[..., Any] | None = None, shards: ShardLeases | None = None,
                   clock: Callable[[], datetime] = utcnow, rng: Callable[[], float] = random.random) -> Services:
    """Wire the adapters (built once), runner, snapshot, instruments, outbox and scheduler (no I/O).

    `clock` is the wall clock of slots, sync judgements and results, `rng` the backoff's jitter: tests fix
    the time of day and script whole days with them."""
    ctx = AdapterContext(session=session, credentials=credentials, clock=clock)
    runner = Runner(build_adapters(specs, ctx), timeout=settings.check_timeout_seconds,
                    limiter=asyncio.Semaphore(settings.max_concurrency), clock=clock,
                    window=max(1024, 2 * settings.max_concurrency), slots=settings.max_concurrency)
    snapshot = Snapshot()
    instruments = Instruments(CollectorRegistry(), __version__, known_types=specs.keys())
    instruments.interval.set(settings.check_interval)
    outbox = Outbox(store, instruments, max_results=settings.persist_queue_max)
    scheduler = Scheduler(store=store, runner=runner, snapshot=snapshot, instruments=instruments, outbox=outbox,
                          interval_s=settings.check_interval, type_intervals=type_intervals(settings, specs),
                          on_cycle=on_cycle, passive_types=settings.passive_types,
                          fallback_after=settings.rate_limit_fallback_after,
                          passive_cooldown_s=settings.passive_cooldown_seconds, shards=shards,
                          backoff=settings.backoff_caps, clock=clock, rng=rng,
                          incidents=replace(settings.incident_rules,
                                            types=vendor_types(specs, settings.vendor_incident_types)),
                          read_ahead=(credentials_ahead(credentials, settings.credential_cache_seconds / 4,
                                                        first=runner.window) if credentials is not None else None))
    warmer = Warmer(session=session, instruments=instruments, snapshot=snapshot,
                    integrations=lambda: scheduler.integrations, lead_s=settings.sync_warmup_lead_seconds,
                    cold_start_s=settings.sync_cold_start_seconds, timeout_s=settings.check_timeout_seconds,
                    clock=clock)
    return Services(store, runner, scheduler, snapshot, instruments, outbox, shards, warmer)


async def egress_policy(settings: Settings) -> EgressPolicy:
    """The destinations tenants' configs may reach: public, EXPORTER_EGRESS_ALLOW, never this exporter."""
    return EgressPolicy.from_allow(settings.egress_allow, own_port=settings.port,
                                   own_addresses=await own_addresses(settings.host), clouds=settings.sovereign_clouds)


@contextlib.asynccontextmanager
async def open_services(settings: Settings, dsn: str, *, specs: Mapping[str, AdapterSpec] = ADAPTERS,
                        on_cycle: Callable[..., Any] | None = None, shared: bool = True,
                        clock: Callable[[], datetime] = utcnow) -> AsyncIterator[Services]:
    """Open the pool and the HTTP session (and, when `shared`, this replica's shard leases); close them on exit.

    `shared=False` (the `check` command) takes no leases: it checks the one organisation it was asked for.
    """
    policy = await egress_policy(settings)
    pool: asyncpg.Pool = await create_pool(dsn, role=settings.db_role or None, max_size=POOL_SIZE)
    # The webhook outbox's own few connections: a flood of deliveries never queues the cycle's writes.
    webhook_pool: asyncpg.Pool = await create_pool(dsn, role=settings.db_role or None, max_size=WEBHOOK_POOL_SIZE)
    session = make_session(policy=policy, limit=settings.max_concurrency)
    # Webhooks on a session of their own: hanging receivers can hold only its connections, never the checks'.
    webhook_session = make_session(policy=policy, limit=settings.webhook_concurrency)
    shards = ShardLeases(pool, settings.replica_id, settings.lease_ttl_seconds) if shared else None
    try:
        if shards is not None:
            await shards.maintain()
        services = build_services(settings, store=Store(pool), session=session,
                                  credentials=credential_provider(settings, pool), specs=specs, on_cycle=on_cycle,
                                  shards=shards, clock=clock)
        services.webhooks, services.egress = Webhooks(webhook_pool, settings.webhook_keyring), policy
        if shared:
            services.notifier = notifier(settings, services.webhooks, services.instruments, webhook_session)
        yield services
        if shards is not None:
            await shards.release_all()
    finally:
        await webhook_session.close()
        await session.close()
        await webhook_pool.close()
        await pool.close()


def notifier(settings: Settings, webhooks: Webhooks, instruments: Instruments,
             session: HttpClient) -> Notifier:
    """The webhook delivery worker over the outbox, with the EXPORTER_WEBHOOK_* settings."""
    return Notifier(webhooks, session, instruments, schedule=settings.webhook_schedule,
                    timeout_s=settings.webhook_timeout_seconds, concurrency=settings.webhook_concurrency,
                    poll_s=settings.webhook_poll_seconds, keep_s=settings.webhook_keep_seconds)
