"""The history prune works in proportion to what was inserted (migration 0023): it keeps each key's latest 96
rows through a per-key count, deletes at most 4 rows per row inserted for a key in one call, and a key left
with too many (a load with triggers off) comes back to 96 over its next inserts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

T0 = datetime(2026, 11, 22, tzinfo=UTC)
SLOT = timedelta(minutes=15)
INSERT_SLOTS = """
INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at)
SELECT $1, $2, $3::timestamptz + g * interval '15 minutes', 'healthy', 1, $3
FROM generate_series($4::int, $5::int) g"""
RECOUNT = """
INSERT INTO health_check_history_count (org_id, integration_type, row_count)
SELECT org_id, integration_type, count(*) FROM health_check_history GROUP BY 1, 2
ON CONFLICT (org_id, integration_type) DO UPDATE SET row_count = EXCLUDED.row_count"""


async def rows(admin, org, kind: str = "http") -> int:
    return await admin.fetchval("SELECT count(*) FROM health_check_history WHERE org_id = $1 AND "
                                "integration_type = $2", org, kind)


async def counted(admin, org, kind: str = "http") -> int | None:
    return await admin.fetchval("SELECT row_count FROM health_check_history_count WHERE org_id = $1 AND "
                                "integration_type = $2", org, kind)


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
