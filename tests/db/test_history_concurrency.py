"""Two transactions inserting history for one key at once still leave the latest 96 rows, not 97."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import asyncpg

T0 = datetime(2026, 11, 22, tzinfo=UTC)
INSERT = ("INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at) "
          "VALUES ($1, 'http', $2, 'healthy', 1, $2)")


async def test_concurrent_inserts_for_one_key_are_pruned_to_96(db_dsn, admin) -> None:
    org = uuid4()
    await admin.executemany(INSERT, [(org, T0 + timedelta(minutes=15 * n)) for n in range(96)])
    first, second = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
    try:
        one, two = first.transaction(), second.transaction()
        await one.start()
        await two.start()
        await first.execute(INSERT, org, T0 + timedelta(days=2))  # pruned in its own snapshot, not committed
        racing = asyncio.create_task(second.execute(INSERT, org, T0 + timedelta(days=3)))
        await asyncio.wait({racing}, timeout=0.5)  # the second pruner waits for the first transaction
        await one.commit()
        await racing
        await two.commit()
    finally:
        await first.close()
        await second.close()
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE org_id = $1", org) == 96
    newest = await admin.fetchval("SELECT max(slot) FROM health_check_history WHERE org_id = $1", org)
    assert newest == T0 + timedelta(days=3)
