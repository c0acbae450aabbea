"""Values a check can produce but a column cannot hold are clamped before they reach the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from exporter.core.model import MAX_LATENCY_MS, IntegrationResult
from exporter.core.syncs import SyncAssessment, SyncRun, SyncState, passive_result

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


async def test_a_sync_that_ran_thirty_days_is_stored_with_the_largest_latency_the_column_holds(store, admin) -> None:
    run = SyncRun(NOW - timedelta(days=30), "success", NOW - timedelta(days=30), NOW)
    result = passive_result(SyncAssessment(SyncState.ON_SCHEDULE, None, 0.0, run, NOW), NOW)
    assert result is not None and result.latency_ms == MAX_LATENCY_MS
    org = uuid4()
    await store.persist([IntegrationResult(org, "xledger", result)], NOW)
    assert await admin.fetchval("SELECT latency_ms FROM integration_health_status WHERE org_id = $1", org) \
        == MAX_LATENCY_MS
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE org_id = $1", org) == 1
