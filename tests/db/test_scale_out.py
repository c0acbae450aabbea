"""Scale-out with real PostgreSQL and three (then four) replicas in one test."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from exporter.adapters.base import AdapterSpec
from exporter.adapters.http import HttpConfig
from exporter.core.model import HealthStatus, make_result
from exporter.engine.leases import ShardLeases, shard_of
from exporter.services import build_services
from exporter.settings import Settings
from exporter.storage.store import Store, create_pool
from tests.helpers import wait_until_async

SLOT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TTL = 1.5


class Instant:
    """A fake adapter that answers at once, so the test is about ownership, not network."""

    def __init__(self, ctx) -> None:
        pass

    async def check(self, org_id: UUID, config: object):
        return make_result(HealthStatus.HEALTHY, 1, datetime.now(UTC))


@pytest.fixture
async def pools(db_dsn):
    opened = [await create_pool(db_dsn, max_size=2) for _ in range(4)]
    yield opened
    for p in opened:
        await p.close()


async def uncovered(admin) -> int:
    return await admin.fetchval("SELECT count(*) FROM integration_health_shards "
                                "WHERE owner IS NULL OR lease_until < now()")


async def settle(replicas: list[ShardLeases], rounds: int = 2) -> None:
    for _ in range(rounds):
        for r in replicas:
            await r.maintain()


def disjoint_and_complete(replicas: list[ShardLeases]) -> bool:
    sets = [r.owned for r in replicas]
    return sum(len(s) for s in sets) == 64 and len(frozenset().union(*sets)) == 64


async def test_python_and_sql_agree_on_every_orgs_shard(admin) -> None:
    orgs = [uuid4() for _ in range(500)]
    rows = await admin.fetch("SELECT o, integration_health_shard_of(o, 64) AS s FROM unnest($1::uuid[]) o", orgs)
    assert {r["o"]: r["s"] for r in rows} == {o: shard_of(o, 64) for o in orgs}


async def test_three_replicas_split_the_shards_fairly_and_a_dead_ones_move_after_the_ttl(pools, admin) -> None:
    a, b, c = (ShardLeases(p, f"replica-{n}", ttl_s=TTL) for n, p in zip("abc", pools[:3], strict=True))
    await settle([a, b, c])
    assert disjoint_and_complete([a, b, c])
    assert sorted(len(r.owned) for r in (a, b, c)) == [20, 22, 22]
    dead = set(c.owned)
    # c stops renewing: it is gone once its leases have lapsed (by the database's clock, which decides)
    lapsed = "SELECT bool_and(lease_until < now()) FROM integration_health_shards WHERE owner = 'replica-c'"
    await wait_until_async(lambda: admin.fetchval(lapsed), what="c's leases to lapse")
    await settle([a, b])
    assert disjoint_and_complete([a, b])
    assert dead <= a.owned | b.owned
    assert await uncovered(admin) == 0


async def test_a_new_replica_takes_its_share_without_a_gap(pools, admin) -> None:
    old = [ShardLeases(p, f"old-{n}", ttl_s=30) for n, p in enumerate(pools[:3])]
    await settle(old)
    new = ShardLeases(pools[3], "new", ttl_s=30)
    for step in [new, *old, new, *old]:
        await step.maintain()
        assert await uncovered(admin) == 0, "a shard had no owner during the handover"
    owners = await admin.fetch("SELECT owner, count(*) AS n FROM integration_health_shards GROUP BY owner")
    assert sorted(r["n"] for r in owners) == [16, 16, 16, 16]


async def test_each_integration_is_checked_by_exactly_one_replica_per_slot(pools, db_dsn, admin) -> None:
    orgs = [uuid4() for _ in range(90)]
    await admin.executemany("INSERT INTO integration_config (org_id, integration_type, config) VALUES "
                            "($1, 'http', $2::jsonb)", [(o, json.dumps({"url": "http://127.0.0.1:9/"})) for o in orgs])
    settings = Settings(database_url=db_dsn, credential_provider="none", type_intervals={})
    replicas = []
    for n, pool in enumerate(pools[:3]):
        leases = ShardLeases(pool, f"r{n}", ttl_s=30)
        replicas.append(build_services(settings, store=Store(pool), session=None,  # type: ignore[arg-type]
                                       specs={"http": AdapterSpec(HttpConfig, Instant)}, shards=leases))
    await settle([s.scheduler.shards for s in replicas])
    for slot in (SLOT, SLOT + timedelta(minutes=15)):
        batches = await asyncio.gather(*(s.scheduler.run_cycle(slot, slot) for s in replicas))
        checked = [r.org_id for batch in batches for r in batch]
        assert sorted(checked) == sorted(orgs), "an integration was checked twice or not at all"
        assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE slot = $1", slot) == 90
    for s in replicas:  # each replica exports only its own shards' integrations
        assert {k[0] for k in s.snapshot.results} == {o for o in orgs if s.scheduler.shards.owns(o)}


async def test_a_read_only_database_keeps_the_leases_held_instead_of_ending_the_renewal(db_dsn, admin) -> None:
    pool = await create_pool(db_dsn, role="service_role", max_size=2)
    try:
        leases = ShardLeases(pool, "r0", ttl_s=30)
        held = await leases.maintain()
        assert held, "a lone replica holds shards"
        await admin.execute(f"ALTER DATABASE {db_dsn.rsplit('/', 1)[1]} SET default_transaction_read_only = on")
        await pool.expire_connections()  # as after a failover to a read-only standby
        assert await leases.maintain() == held  # logged and kept, not raised
    finally:
        await pool.close()


def orgs_in_both_halves(n: int) -> list[UUID]:
    """n organisations in shards 0-31 and n in shards 32-63, so each of two replicas has some."""
    low: list[UUID] = []
    high: list[UUID] = []
    while len(low) < n or len(high) < n:
        org = uuid4()
        half = low if shard_of(org, 64) < 32 else high
        if len(half) < n:
            half.append(org)
    return low + high


async def test_shards_gained_while_the_first_cycle_runs_are_checked_in_that_slot(pools, db_dsn, admin) -> None:
    """A replica starting beside a dying one: it holds half the shards when its first cycle starts, and the
    other half lapse to it mid-cycle. The take-over waits for that cycle, then checks the gained half."""
    orgs = orgs_in_both_halves(8)
    await admin.executemany("INSERT INTO integration_config (org_id, integration_type, config) VALUES "
                            "($1, 'http', $2::jsonb)", [(o, json.dumps({"url": "http://127.0.0.1:9/"})) for o in orgs])
    dying, starting = ShardLeases(pools[0], "dying", ttl_s=30), ShardLeases(pools[1], "starting", ttl_s=30)
    await settle([dying, starting])
    in_cycle, release = asyncio.Event(), asyncio.Event()

    class Gated:
        def __init__(self, ctx) -> None:
            pass

        async def check(self, org_id: UUID, config: object):
            in_cycle.set()
            await release.wait()
            return make_result(HealthStatus.HEALTHY, 1, datetime.now(UTC))

    settings = Settings(database_url=db_dsn, credential_provider="none", type_intervals={})
    scheduler = build_services(settings, store=Store(pools[1]), session=None,  # type: ignore[arg-type]
                               specs={"http": AdapterSpec(HttpConfig, Gated)}, shards=starting).scheduler
    scheduler.cycle_task = asyncio.create_task(scheduler.run_cycle(SLOT, SLOT))  # as run_forever starts it
    await in_cycle.wait()
    await dying.release_all()  # its shards are free now, as after its leases lapsed
    before = starting.owned
    gained = await starting.maintain() - before  # what the lease loop does between cycles
    assert len(before) == len(gained) == 32
    take_over = asyncio.create_task(scheduler.take_over(gained))
    release.set()
    checked = [*await scheduler.cycle_task, *await take_over]
    assert sorted(r.org_id for r in checked) == sorted(orgs), "an integration was checked twice or not at all"
