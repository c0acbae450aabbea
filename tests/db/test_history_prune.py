"""The history prune works in proportion to what was inserted (migrations 0023, 0026): it keeps each key's latest
96 rows through a per-key count, deletes at most 4 rows per row inserted for a key in one call, and a key left
with too many (a load with triggers off) comes back to 96 over its next inserts. Each key's oldest slot is kept
beside its count (0026) so the lookups start at its live rows; rows below it are kept, never deleted in place
of newer ones, and a count higher than the rows deletes none of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg

from exporter.core.model import HealthStatus, IntegrationResult, make_result
from exporter.storage.migrate import load_migrations, migrate
from exporter.storage.store import Store, create_pool

T0 = datetime(2026, 11, 22, tzinfo=UTC)
SLOT = timedelta(minutes=15)
INSERT_SLOTS = """
INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at)
SELECT $1, $2, $3::timestamptz + g * interval '15 minutes', 'healthy', 1, $3
FROM generate_series($4::int, $5::int) g"""
RECOUNT = """
INSERT INTO health_check_history_count (org_id, integration_type, row_count, oldest)
SELECT org_id, integration_type, count(*), min(slot) FROM health_check_history GROUP BY 1, 2
ON CONFLICT (org_id, integration_type) DO UPDATE SET row_count = EXCLUDED.row_count, oldest = EXCLUDED.oldest"""


async def rows(admin, org, kind: str = "http") -> int:
    return await admin.fetchval("SELECT count(*) FROM health_check_history WHERE org_id = $1 AND "
                                "integration_type = $2", org, kind)


async def counted(admin, org, kind: str = "http") -> int | None:
    return await admin.fetchval("SELECT row_count FROM health_check_history_count WHERE org_id = $1 AND "
                                "integration_type = $2", org, kind)


async def slots(admin, org, kind: str = "http") -> list[int]:
    """The key's held slots, as numbers of 15-minute steps after T0."""
    held = await admin.fetch("SELECT slot FROM health_check_history WHERE org_id = $1 AND integration_type = $2 "
                             "ORDER BY slot", org, kind)
    return [int((r["slot"] - T0) / SLOT) for r in held]


async def oldest(admin, org, kind: str = "http") -> int | None:
    at = await admin.fetchval("SELECT oldest FROM health_check_history_count WHERE org_id = $1 AND "
                              "integration_type = $2", org, kind)
    return None if at is None else int((at - T0) / SLOT)


async def test_the_count_follows_inserts_and_the_prune_and_other_deletes(admin) -> None:
    org = uuid4()
    await admin.execute(INSERT_SLOTS, org, "http", T0, 0, 49)
    assert (await rows(admin, org), await counted(admin, org)) == (50, 50)
    await admin.execute(INSERT_SLOTS, org, "http", T0, 50, 109)  # 110 in all: the 14 oldest go
    assert (await rows(admin, org), await counted(admin, org)) == (96, 96)
    assert await admin.fetchval("SELECT min(slot) FROM health_check_history WHERE org_id = $1", org) == T0 + 14 * SLOT
    await admin.execute("DELETE FROM health_check_history WHERE org_id = $1 AND slot < $2", org, T0 + 20 * SLOT)
    assert (await rows(admin, org), await counted(admin, org)) == (90, 90)
    await admin.execute("TRUNCATE health_check_history")
    assert await admin.fetchval("SELECT count(*) FROM health_check_history_count") == 0


async def test_one_insert_deletes_at_most_four_rows_per_inserted_row_until_the_excess_is_gone(admin) -> None:
    org, other = uuid4(), uuid4()
    await admin.execute(INSERT_SLOTS, other, "http", T0, 0, 95)  # a neighbour at exactly 96: never touched
    async with admin.transaction():  # a bulk load that bypassed the prune, then recounted as 0023 says
        await admin.execute("SET LOCAL session_replication_role = replica")
        await admin.execute(INSERT_SLOTS, org, "http", T0, 0, 299)
    await admin.execute(RECOUNT)
    assert await counted(admin, org) == 300
    held = []
    for n in range(300, 380):  # one new slot per call, as a cycle inserts
        await admin.execute(INSERT_SLOTS, org, "http", T0, n, n)
        held.append(await rows(admin, org))
    before = [300, *held[:-1]]
    assert all(b + 1 - h <= 4 for b, h in zip(before, held, strict=True))  # deleted per call ≤ 4 × inserted
    assert held[0] == 297 and held[-1] == 96  # the excess went, 3 a call, then it holds 96
    assert await counted(admin, org) == 96
    oldest = await admin.fetchval("SELECT min(slot) FROM health_check_history WHERE org_id = $1", org)
    assert oldest == T0 + (380 - 96) * SLOT  # and the 96 it keeps are the newest
    assert (await rows(admin, other), await counted(admin, other)) == (96, 96)


async def test_a_key_inserted_many_rows_at_once_keeps_its_newest_96_in_that_statement(admin) -> None:
    org = uuid4()
    await admin.execute(INSERT_SLOTS, org, "xledger", T0, 0, 199)
    assert (await rows(admin, org, "xledger"), await counted(admin, org, "xledger")) == (96, 96)
    assert await admin.fetchval("SELECT min(slot) FROM health_check_history WHERE org_id = $1", org) == T0 + 104 * SLOT


async def test_the_oldest_slot_follows_the_prune_and_inserts_older_than_it(admin) -> None:
    org = uuid4()
    await admin.execute(INSERT_SLOTS, org, "http", T0, 10, 59)
    assert await oldest(admin, org) == 10
    await admin.execute(INSERT_SLOTS, org, "http", T0, 60, 109)  # 100 held: the 4 oldest go
    assert (await slots(admin, org), await oldest(admin, org)) == (list(range(14, 110)), 14)
    for n in range(110, 115):  # a cycle at a time: one goes per slot, and the oldest moves with it
        await admin.execute(INSERT_SLOTS, org, "http", T0, n, n)
        assert (await slots(admin, org), await oldest(admin, org)) == (list(range(n - 95, n + 1)), n - 95)
    await admin.execute("DELETE FROM health_check_history WHERE org_id = $1 AND slot < $2", org, T0 + 30 * SLOT)
    assert (await counted(admin, org), await oldest(admin, org)) == (85, 19)  # still no row older: a lower bound
    await admin.execute(INSERT_SLOTS, org, "http", T0, 0, 0)  # a backfilled older slot lowers it
    assert (await counted(admin, org), await oldest(admin, org)) == (86, 0)
    await admin.execute(INSERT_SLOTS, org, "http", T0, 115, 125)  # 97 held: the backfilled one goes first
    assert (await slots(admin, org), await oldest(admin, org)) == (list(range(30, 126)), 30)


async def test_rows_loaded_below_the_oldest_slot_are_kept_and_the_newest_rows_stay(admin) -> None:
    org = uuid4()
    await admin.execute(INSERT_SLOTS, org, "http", T0, 10, 105)
    async with admin.transaction():  # a restore with triggers off, not recounted
        await admin.execute("SET LOCAL session_replication_role = replica")
        await admin.execute(INSERT_SLOTS, org, "http", T0, 0, 1)
    await admin.execute(INSERT_SLOTS, org, "http", T0, 106, 107)  # the count says 98: the 2 oldest it knows go
    assert await slots(admin, org) == [0, 1, *range(12, 108)]  # the newest 96 all there
    await admin.execute(RECOUNT)  # as 0026 says: then the prune brings it back to 96
    await admin.execute(INSERT_SLOTS, org, "http", T0, 108, 108)
    assert (await slots(admin, org), await counted(admin, org)) == (list(range(13, 109)), 96)


async def test_a_count_higher_than_the_rows_held_deletes_none_of_them(admin) -> None:
    org = uuid4()
    await admin.execute(INSERT_SLOTS, org, "http", T0, 0, 2)
    await admin.execute("UPDATE health_check_history_count SET row_count = 300 WHERE org_id = $1", org)
    await admin.execute(INSERT_SLOTS, org, "http", T0, 3, 3)  # "4 to delete", but the rows end before that
    assert await slots(admin, org) == [0, 1, 2, 3]


def result(org, kind: str, at: datetime) -> IntegrationResult:
    return IntegrationResult(org, kind, make_result(HealthStatus.HEALTHY, 10, at))


async def test_0026_on_a_database_with_history_fills_each_oldest_slot_and_the_persist_keeps_the_newest_96(
        empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate(conn, [m for m in load_migrations() if m.name < "0026"])
        orgs, kinds = [uuid4() for _ in range(3)], ["http", "xledger"]
        for org in orgs:  # a day of history and more, counted and pruned by the triggers of 0023
            await conn.execute("""
                INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at)
                SELECT $1, k, $2::timestamptz + g * interval '15 minutes', 'healthy', 1, $2
                FROM unnest($3::text[]) k, generate_series(0, 99) g""", org, T0, kinds)
        assert await migrate(conn) == [m.name for m in load_migrations() if m.name >= "0026"]
        assert {(r["row_count"], r["oldest"]) for r in await conn.fetch(
            "SELECT row_count, oldest FROM health_check_history_count")} == {(96, T0 + 4 * SLOT)}
        pool = await create_pool(empty_db_dsn)
        try:
            for n in range(100, 103):
                await Store(pool).persist([result(o, k, T0 + n * SLOT) for o in orgs for k in kinds], T0 + n * SLOT)
        finally:
            await pool.close()
        held = await conn.fetch("""
            SELECT count(*) AS n, min(h.slot) AS first, c.row_count, c.oldest
            FROM health_check_history h JOIN health_check_history_count c USING (org_id, integration_type)
            GROUP BY h.org_id, h.integration_type, c.row_count, c.oldest""")
        assert len(held) == 6
        assert {tuple(r) for r in held} == {(96, T0 + 7 * SLOT, 96, T0 + 7 * SLOT)}
    finally:
        await conn.close()
