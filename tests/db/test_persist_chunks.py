"""A large batch is persisted in chunks, one transaction each (store.PERSIST_CHUNK keys, two at once), and
migration 0025 leaves room on the status table's pages: what a persist writes is the same as in one piece, a
chunk that fails leaves the ones written beside and before it written and the batch written again changes nothing for them, and the prune
keeps each key's newest 96 history rows with its count right, on a database migrated with data in it."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest

from exporter.core.events import EventType
from exporter.core.model import HealthStatus, IntegrationResult, make_result
from exporter.storage import store as store_module
from exporter.storage.migrate import load_migrations, migrate
from exporter.storage.store import PersistError, Store, create_pool
from tests.db.test_store import FlakyPool, fast_retrying

T0 = datetime(2026, 11, 24, tzinfo=UTC)
SLOT = timedelta(minutes=15)
H, U = HealthStatus.HEALTHY, HealthStatus.UNREACHABLE
KINDS = ["http", "xledger", "tripletex"]


def result(org: UUID, kind: str, status: HealthStatus, at: datetime, latency: int = 10) -> IntegrationResult:
    return IntegrationResult(org, kind, make_result(status, latency, at, None if status == H else "HTTP 503"))


@pytest.fixture
def chunk_of_4(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(store_module, "PERSIST_CHUNK", 4)
    return 4


async def test_a_batch_of_many_chunks_writes_every_key_and_the_latest_result_of_a_repeated_key(
        store: Store, admin, chunk_of_4) -> None:
    orgs = [uuid4() for _ in range(5)]
    batch = [result(o, k, H, T0) for o in orgs for k in KINDS]  # 15 keys: chunks of 2 orgs (6 keys), 1
    late = result(orgs[0], "http", U, T0 + timedelta(seconds=30))
    early = result(orgs[4], "tripletex", U, T0 - timedelta(seconds=30))
    await store.persist([late, *batch, early], T0)  # a repeat of a key in another chunk's place: the latest wins
    rows = await admin.fetch("SELECT org_id, integration_type, status FROM integration_health_status")
    assert len(rows) == 15
    assert {(r["org_id"], r["integration_type"]): r["status"] for r in rows if r["status"] != "healthy"} == {
        (orgs[0], "http"): "unreachable"}
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE slot = $1", T0) == 15


async def test_each_chunk_announces_its_own_status_changes_and_flag_moves(store: Store, admin, chunk_of_4) -> None:
    orgs = [uuid4() for _ in range(5)]
    for org in orgs[::2]:  # three subscribed organisations, two not
        await admin.execute("INSERT INTO webhook_subscription (org_id, url, events) VALUES ($1, $2, $3)", org,
                            "https://hooks.example.com/in", [t.value for t in EventType])
    for n, status in enumerate([H, H, U, U]):
        await store.persist([result(o, k, status, T0 + n * SLOT) for o in orgs for k in KINDS], T0 + n * SLOT)
    rows = await admin.fetch("SELECT org_id, payload->'data'->>'integration_type' AS kind, event_type "
                             "FROM webhook_delivery")
    assert sorted((r["org_id"], r["kind"]) for r in rows) == sorted((o, k) for o in orgs[::2] for k in KINDS)
    assert {r["event_type"] for r in rows} == {"integration.status_changed"}
    expiring = T0 + timedelta(days=10)  # a flag move, read only for the subscribed organisations' rows
    batch = [result(o, k, U, T0 + 4 * SLOT) for o in orgs for k in KINDS]
    batch = [IntegrationResult(r.org_id, r.integration_type, replace(r.result, credential_expires_at=expiring))
             for r in batch]
    await store.persist(batch, T0 + 4 * SLOT)
    expiry = await admin.fetch("SELECT org_id FROM webhook_delivery WHERE event_type = 'credential.expiring'")
    assert sorted(r["org_id"] for r in expiry) == sorted(o for o in orgs[::2] for _ in KINDS)


async def test_a_failing_chunk_leaves_the_earlier_ones_written_and_the_batch_written_again_changes_nothing_for_them(
        store: Store, admin, chunk_of_4) -> None:
    orgs = [uuid4() for _ in range(4)]
    for org in orgs:
        await admin.execute("INSERT INTO webhook_subscription (org_id, url, events) VALUES ($1, $2, $3)", org,
                            "https://hooks.example.com/in", [t.value for t in EventType])
    for n, status in enumerate([H, H, U]):
        await store.persist([result(o, k, status, T0 + n * SLOT) for o in orgs for k in KINDS], T0 + n * SLOT)
    confirming = [result(o, k, U, T0 + 3 * SLOT) for o in orgs for k in KINDS]  # 12 keys: 2 chunks of 2 orgs

    class SecondChunkRefused(FlakyPool):
        """Lets the first chunk through, then refuses every connection."""

        def acquire(self, **options):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionRefusedError(111, "Connection refused")
            return self.pool.acquire(**options)

    with pytest.raises(PersistError, match=r"could not persist 12 results: ConnectionRefusedError.*6 of them written"):
        await Store(SecondChunkRefused(store.pool, failures=0), retrying=fast_retrying(2)).persist(confirming,
                                                                                                   T0 + 3 * SLOT)
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE slot = $1", T0 + 3 * SLOT) == 6
    assert await admin.fetchval("SELECT count(*) FROM webhook_delivery") == 6  # the first chunk's changes
    await store.persist(confirming, T0 + 3 * SLOT)  # the outbox writes the whole batch again
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE slot = $1", T0 + 3 * SLOT) == 12
    assert await admin.fetchval("SELECT count(*) FROM webhook_delivery") == 12, "each change announced once"
    assert await admin.fetchval("SELECT count(*) FROM integration_health_status WHERE status = 'unreachable' "
                                "AND confirmed_status = 'unreachable'") == 12


async def test_two_chunks_are_written_at_once_on_their_own_connections(store: Store, admin, chunk_of_4) -> None:
    class Holders:
        """Wraps the pool; counts the connections held at once."""

        def __init__(self, pool: asyncpg.Pool) -> None:
            self.pool, self.now, self.most = pool, 0, 0

        @contextlib.asynccontextmanager
        async def acquire(self, **options):
            async with self.pool.acquire(**options) as conn:
                self.now += 1
                self.most = max(self.most, self.now)
                try:
                    yield conn
                finally:
                    self.now -= 1

    holders = Holders(store.pool)
    orgs = [uuid4() for _ in range(10)]  # 5 chunks of 2 orgs
    await Store(holders).persist([result(o, k, H, T0) for o in orgs for k in KINDS], T0)
    assert holders.most == store_module.PERSIST_IN_FLIGHT == 2
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE slot = $1", T0) == 30


async def test_a_chunk_the_database_refuses_raises_its_error_once_the_chunk_written_beside_it_has_finished(
        store: Store, admin, chunk_of_4) -> None:
    orgs = [uuid4() for _ in range(4)]
    batch = [result(o, k, H, T0) for o in orgs for k in KINDS]  # 2 chunks of 2 orgs, written at once
    batch[-1] = result(orgs[-1], "bad\x00type", H, T0)  # text PostgreSQL cannot store, in the second chunk
    with pytest.raises(asyncpg.DataError):  # as it is: the outbox halves the batch to find the value
        await store.persist(batch, T0)
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE slot = $1", T0) == 6
    assert await admin.fetchval("SELECT count(DISTINCT org_id) FROM integration_health_status") == 2


async def test_when_an_early_chunk_of_five_fails_none_starts_after_it_and_the_one_under_way_finishes_written(
        store: Store, admin, chunk_of_4) -> None:
    """Two chunks in flight (PERSIST_IN_FLIGHT): the first is refused while the second holds its connection; the
    second is written after the failure, the three after them never start, and the refusal comes out."""
    class Ordered:
        """Wraps the pool: the first chunk goes on only once the second holds its connection, the second only
        once the first has failed; counts the chunks started (connections taken)."""

        def __init__(self, pool: asyncpg.Pool) -> None:
            self.pool, self.calls = pool, 0
            self.second_in, self.first_failed = asyncio.Event(), asyncio.Event()

        @contextlib.asynccontextmanager
        async def acquire(self, **options):
            self.calls += 1
            call = self.calls
            async with self.pool.acquire(**options) as conn:
                if call == 1:
                    await self.second_in.wait()
                    try:
                        yield conn
                    finally:
                        self.first_failed.set()
                    return
                if call == 2:
                    self.second_in.set()
                    await self.first_failed.wait()
                yield conn

    orgs = [uuid4() for _ in range(10)]  # 5 chunks of 2 organisations
    batch = [result(o, k, H, T0) for o in orgs for k in KINDS]
    batch[0] = result(orgs[0], "bad\x00type", H, T0)  # text PostgreSQL cannot store, in the first chunk
    pool = Ordered(store.pool)
    with pytest.raises(asyncpg.DataError):
        await Store(pool).persist(batch, T0)
    assert pool.first_failed.is_set() and pool.calls == 2, "no chunk started after the failure"
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE slot = $1", T0) == 6
    written = await admin.fetch("SELECT DISTINCT org_id FROM integration_health_status")
    assert sorted(r["org_id"] for r in written) == sorted(orgs[2:4]), "the chunk under way, finished and kept"


async def test_0025_on_a_database_with_history_keeps_the_newest_96_rows_per_key_and_the_counts_right(
        empty_db_dsn: str, chunk_of_4) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate(conn, [m for m in load_migrations() if m.name < "0025"])
        orgs = [uuid4() for _ in range(3)]
        for org in orgs:  # a day of history and a status row per key, written by the triggers of 0023
            await conn.execute("""
                INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at)
                SELECT $1, k, $2::timestamptz - g * interval '15 minutes', 'healthy', 1, $2
                FROM unnest($3::text[]) k, generate_series(1, 100) g""", org, T0, KINDS)
            await conn.execute("""
                INSERT INTO integration_health_status (org_id, integration_type, status, checked_at)
                SELECT $1, k, 'healthy', $2::timestamptz - interval '15 minutes' FROM unnest($3::text[]) k""",
                               org, T0, KINDS)
        assert await migrate(conn) == [m.name for m in load_migrations() if m.name >= "0025"]
        assert "fillfactor=50" in await conn.fetchval("SELECT array_to_string(reloptions, ',') FROM pg_class "
                                                      "WHERE oid = 'public.integration_health_status'::regclass")
        pool = await create_pool(empty_db_dsn)
        try:
            store = Store(pool)
            for n in range(4):
                await store.persist([result(o, k, H, T0 + n * SLOT) for o in orgs for k in KINDS], T0 + n * SLOT)
        finally:
            await pool.close()
        held = await conn.fetch("""
            SELECT h.org_id, h.integration_type, count(*) AS n, min(h.slot) AS oldest, c.row_count
            FROM health_check_history h JOIN health_check_history_count c USING (org_id, integration_type)
            GROUP BY h.org_id, h.integration_type, c.row_count""")
        assert len(held) == 9
        assert {(r["n"], r["oldest"], r["row_count"]) for r in held} == {(96, T0 - 92 * SLOT, 96)}
        assert await conn.fetchval("SELECT count(*) FROM integration_health_status WHERE checked_at = $1",
                                   T0 + 3 * SLOT) == 9
    finally:
        await conn.close()
