"""Faults with real processes: PostgreSQL stopped for cycles or restarted mid-write, the service killed
mid-cycle. Afterwards nothing is lost, nothing is doubled, and status and history agree."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from exporter.demo.embedded_pg import LocalPostgres, free_port
from exporter.demo.simulator import Mode
from exporter.storage.migrate import migrate
from exporter.web.api import SERVICES
from tests.conftest import _bin_dir
from tests.helpers import (
    WEBHOOK_KEYS,
    add_http,
    assert_secret_absent,
    gauges,
    service_outputs,
    settings_for,
    wait_until,
    wait_until_async,
)


@pytest.fixture
async def own_pg(tmp_path: Path) -> AsyncIterator[tuple[LocalPostgres, str]]:
    """A PostgreSQL of this test's own, so the test may stop and restart it."""
    server = LocalPostgres(tmp_path / "pg", _bin_dir(), fast=True)
    dsn = server.start()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield server, dsn
    finally:
        server.stop()


async def consistency(dsn: str) -> dict[str, int]:
    """Status and history must tell one story: each status row is its integration's newest history row."""
    conn = await asyncpg.connect(dsn)
    try:
        disagree = await conn.fetchval("""
            SELECT count(*) FROM integration_health_status s
            WHERE NOT EXISTS (
                SELECT 1 FROM (SELECT h.status, h.checked_at FROM health_check_history h
                               WHERE (h.org_id, h.integration_type) = (s.org_id, s.integration_type)
                               ORDER BY h.slot DESC LIMIT 1) newest
                WHERE (newest.status, newest.checked_at) = (s.status, s.checked_at))""")
        doubled = await conn.fetchval("""SELECT count(*) FROM (SELECT 1 FROM health_check_history
                                         GROUP BY org_id, integration_type, slot HAVING count(*) > 1) d""")
        return {"disagree": disagree, "doubled": doubled,
                "status": await conn.fetchval("SELECT count(*) FROM integration_health_status"),
                "history": await conn.fetchval("SELECT count(*) FROM health_check_history")}
    finally:
        await conn.close()


PLANTED = "PLANTED-fault-5e6f7a0b"


async def seed(dsn: str, sim, tmp_path: Path, n: int = 3) -> list[UUID]:
    """n orgs, each with a Fiken integration whose tenant accepts only the planted secret."""
    state, base = sim
    conn = await asyncpg.connect(dsn)
    try:
        orgs = [uuid4() for _ in range(n)]
        for i, org in enumerate(orgs):
            (tmp_path / str(org)).mkdir()
            (tmp_path / str(org) / "fiken-token").write_text(PLANTED)
            state.secrets[f"t{i}"] = PLANTED
            await conn.execute("INSERT INTO integration_config (org_id, integration_type, config, credential_ref) "
                               "VALUES ($1, 'fiken', $2::jsonb, 'fiken-token')", org,
                               json.dumps({"url": f"{base}/fiken/t{i}/api/v2"}))
        return orgs
    finally:
        await conn.close()


def settings_with_secrets(dsn: str, tmp_path: Path):
    return settings_for(dsn, credential_provider="directory", credentials_dir=tmp_path)


async def test_database_down_for_two_cycles_queues_results_and_keeps_serving_gauges(own_pg, sim, tmp_path,
                                                                                   service_client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server, dsn = own_pg
    orgs = await seed(dsn, sim, tmp_path)
    client = await service_client(settings_with_secrets(dsn, tmp_path), dsn)
    services = client.app[SERVICES]
    services.outbox.retry_min_s = 0.2
    await wait_until(lambda: services.scheduler.last_slot is not None, what="the first cycle")
    await wait_until(lambda: services.outbox.pending == 0, what="the first cycle's results to be stored")
    server.stop()
    slots = [datetime(2030, 1, 1, tzinfo=UTC) + timedelta(days=i) for i in range(2)]  # the interval is a day
    for slot in slots:
        await services.scheduler.run_cycle(slot, slot)
    assert services.outbox.pending == 2 * len(orgs)
    assert (await client.get("/readyz")).status == 503
    status = gauges(await (await client.get("/metrics")).text())["integration_health_status"]
    healthy = [v for labels, v in status.items() if ("status", "healthy") in labels]
    # The last known values, served while the database is away (healthy: the secret reached the vendor).
    assert healthy == [1.0] * len(orgs)

    server.start()
    await wait_until(lambda: services.outbox.pending == 0, timeout=60, what="the queue to drain")
    assert (await client.get("/readyz")).status == 200
    assert await consistency(dsn) == {"disagree": 0, "doubled": 0, "status": len(orgs), "history": 3 * len(orgs)}
    assert_secret_absent(PLANTED, await service_outputs(client, dsn, orgs) | {"logs": caplog.text})


async def test_postgres_restarted_mid_write_leaves_no_half_written_cycle(own_pg, sim, tmp_path, service_client,
                                                                        caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server, dsn = own_pg
    orgs = await seed(dsn, sim, tmp_path, n=5)
    client = await service_client(settings_with_secrets(dsn, tmp_path), dsn)
    services = client.app[SERVICES]
    services.outbox.retry_min_s = 0.2
    await wait_until(lambda: services.scheduler.last_slot is not None, what="the first cycle")
    await wait_until(lambda: services.outbox.pending == 0, what="the first cycle's results to be stored")

    blocker = await asyncpg.connect(dsn)  # holds the history table, so the next write stops halfway
    await blocker.execute("BEGIN; LOCK TABLE health_check_history IN ACCESS EXCLUSIVE MODE")
    slot = datetime(2030, 1, 1, tzinfo=UTC)
    cycle = asyncio.create_task(services.scheduler.run_cycle(slot, slot))
    watcher = await asyncpg.connect(dsn)
    await wait_until_async(lambda: watcher.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'integration-health' "
        "AND wait_event_type = 'Lock'"), what="the write to wait on the lock")
    await watcher.close()
    server.stop()  # fast shutdown: every session, the waiting write's too, is cut off mid-transaction
    with contextlib.suppress(Exception):
        await blocker.close(timeout=1)
    server.start()
    await cycle
    await wait_until(lambda: services.outbox.pending == 0, timeout=60, what="the queued write to land")
    assert await consistency(dsn) == {"disagree": 0, "doubled": 0, "status": len(orgs), "history": 2 * len(orgs)}
    assert_secret_absent(PLANTED, await service_outputs(client, dsn, orgs) | {"logs": caplog.text})


async def test_sigkill_mid_cycle_then_restart_runs_the_missed_slot_once(own_pg, sim, tmp_path) -> None:
    server, dsn = own_pg
    state, base = sim
    state.modes.update({"slow": Mode("hang"), "ok": Mode("healthy")})
    orgs = [uuid4() for _ in range(8)]  # spread over shards, so some land in the dead replica's half
    conn = await asyncpg.connect(dsn)
    for org in orgs:
        await add_http(conn, org, "slow", base)
        await add_http(conn, org, "ok", base, kind="fiken")
    await conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTER_")} | {
        "DATABASE_URL": dsn, "EXPORTER_CHECK_INTERVAL": "86400", "EXPORTER_CHECK_TIMEOUT_SECONDS": "2",
        "EXPORTER_CREDENTIAL_PROVIDER": "none", "EXPORTER_API_ENABLED": "false", "EXPORTER_EGRESS_ALLOW": "127.0.0.1",
        "EXPORTER_LEASE_TTL_SECONDS": "10",  # long enough that the successor starts before they lapse
        "EXPORTER_WEBHOOK_SECRET_KEYS": WEBHOOK_KEYS}
    logs = []

    async def start() -> asyncio.subprocess.Process:
        # A new replica id each start, as without a StatefulSet: the successor must wait for the dead
        # one's leases to lapse, then take its shards over within the slot.
        logs.append(tmp_path / f"serve-{len(logs)}.log")
        with logs[-1].open("w") as out:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "exporter", "serve", stdout=out, stderr=asyncio.subprocess.STDOUT,
                env=env | {"EXPORTER_PORT": str(free_port()), "EXPORTER_REPLICA_ID": f"replica-{len(logs) - 1}"})

    first = await start()
    await wait_until(lambda: state.requests.get("slow") == len(orgs), what="the hanging checks to start")
    first.send_signal(signal.SIGKILL)  # no shutdown, no flush: the cycle's results die with it
    await first.wait()
    assert (await consistency(dsn))["history"] == 0

    second = await start()
    try:
        await wait_until_async(lambda: history_count(dsn, 2 * len(orgs)), timeout=60,
                               what="the missed slot to be run")
        # A second run of the slot could only come from the successor's lease loop (renew, then take over
        # what it gained). Wait until it holds every shard and has renewed twice since: a whole pass of
        # that loop, take-over included, then ran after the slot was complete.
        await wait_until_async(lambda: holds_every_shard(dsn, "replica-1"), timeout=30, what="every shard held")
        for _ in range(2):
            _, latest = await leases(dsn, "replica-1")
            await wait_until_async(functools.partial(renewed_after, dsn, "replica-1", latest), timeout=30,
                                   what="a renewal")
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 30)
    assert second.returncode == 0, logs[-1].read_text()
    assert "took over" in logs[-1].read_text()
    n = 2 * len(orgs)
    assert await consistency(dsn) == {"disagree": 0, "doubled": 0, "status": n, "history": n}
    assert state.requests["slow"] == 2 * len(orgs)  # once by the killed process, once by its successor


async def fetchrow(dsn: str, sql: str, *args: object) -> asyncpg.Record:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(sql, *args)
    finally:
        await conn.close()


async def holds_every_shard(dsn: str, replica: str) -> bool:
    row = await fetchrow(dsn, "SELECT count(*) FILTER (WHERE owner = $1 AND lease_until > now()) = count(*) "
                              "FROM integration_health_shards", replica)
    return row[0]


async def leases(dsn: str, replica: str) -> tuple[datetime, datetime]:
    """The earliest and the latest lease_until of the replica's shards."""
    row = await fetchrow(dsn, "SELECT min(lease_until), max(lease_until) FROM integration_health_shards "
                              "WHERE owner = $1", replica)
    return row[0], row[1]


async def renewed_after(dsn: str, replica: str, moment: datetime) -> bool:
    """Every shard of the replica renewed after `moment`: its lease loop has run maintain() since."""
    earliest, _ = await leases(dsn, replica)
    return earliest > moment


async def history_count(dsn: str, at_least: int) -> bool:
    row = await fetchrow(dsn, "SELECT count(*) FROM health_check_history")
    return row[0] >= at_least
