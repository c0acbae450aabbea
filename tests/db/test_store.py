"""The store against a real PostgreSQL: upsert, history per slot, pruning to 96, retries."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import asyncpg
import pytest
from tenacity import AsyncRetrying, stop_after_attempt, wait_none

from exporter.core.model import HealthStatus, IntegrationResult, Reason, make_result
from exporter.storage import store as store_module
from exporter.storage.store import PersistError, Store, default_retrying

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SLOT = timedelta(minutes=15)


def result(org: UUID, kind: str, status: HealthStatus, at: datetime, latency: int = 10,
           error: str | None = None) -> IntegrationResult:
    return IntegrationResult(org, kind, make_result(status, latency, at, error,
                                                    None if status == HealthStatus.HEALTHY else Reason.ERROR))


async def test_upsert_updates_the_existing_row_rather_than_adding_one(store: Store, admin) -> None:
    org = uuid4()
    await store.persist([result(org, "http", HealthStatus.HEALTHY, T0, 10)], T0)
    await store.persist([result(org, "http", HealthStatus.UNREACHABLE, T0 + SLOT, 10_000, "timed out")], T0 + SLOT)
    rows = await admin.fetch("SELECT status, latency_ms, checked_at, error_message FROM integration_health_status")
    assert [tuple(r) for r in rows] == [("unreachable", 10_000, T0 + SLOT, "timed out")]


async def test_a_history_row_is_written_with_each_upsert(store: Store, admin) -> None:
    org = uuid4()
    batch = [result(org, "http", HealthStatus.HEALTHY, T0), result(org, "xledger", HealthStatus.DEGRADED, T0)]
    await store.persist(batch, T0)
    history = await admin.fetch("SELECT integration_type, slot, status FROM health_check_history ORDER BY 1")
    assert [tuple(r) for r in history] == [("http", T0, "healthy"), ("xledger", T0, "degraded")]
    assert await admin.fetchval("SELECT count(*) FROM integration_health_status") == 2


async def test_status_and_history_are_written_in_one_transaction(store: Store, admin) -> None:
    org = uuid4()
    # A history row that violates the CHECK on status would fail the statement: nothing may be left behind.
    await admin.execute("ALTER TABLE health_check_history ADD CONSTRAINT no_xledger CHECK (integration_type <> 'xledger')")
    with pytest.raises(asyncpg.CheckViolationError):
        await store.persist([result(org, "http", HealthStatus.HEALTHY, T0),
                             result(org, "xledger", HealthStatus.HEALTHY, T0)], T0)
    assert await admin.fetchval("SELECT count(*) FROM integration_health_status") == 0
    assert await admin.fetchval("SELECT count(*) FROM health_check_history") == 0


async def test_a_rerun_of_the_same_slot_adds_no_history_row(store: Store, admin) -> None:
    org = uuid4()
    await store.persist([result(org, "http", HealthStatus.HEALTHY, T0)], T0)
    await store.persist([result(org, "http", HealthStatus.DEGRADED, T0 + timedelta(seconds=30))], T0)
    assert await admin.fetchval("SELECT count(*) FROM health_check_history") == 1
    assert await admin.fetchval("SELECT status FROM integration_health_status") == "degraded"


async def test_an_older_result_never_overwrites_a_newer_status(store: Store, admin) -> None:
    org = uuid4()
    await store.persist([result(org, "http", HealthStatus.HEALTHY, T0 + SLOT)], T0 + SLOT)
    await store.persist([result(org, "http", HealthStatus.UNREACHABLE, T0)], T0)  # a delayed retry
    assert await admin.fetchval("SELECT status FROM integration_health_status") == "healthy"
    assert await admin.fetchval("SELECT count(*) FROM health_check_history") == 2


async def test_repeated_keys_in_one_batch_keep_the_latest(store: Store, admin) -> None:
    org = uuid4()
    await store.persist([result(org, "http", HealthStatus.DEGRADED, T0 + timedelta(seconds=5)),
                         result(org, "http", HealthStatus.HEALTHY, T0)], T0)
    assert await admin.fetchval("SELECT status FROM integration_health_status") == "degraded"


async def test_100_history_rows_for_one_key_leave_exactly_the_latest_96(store: Store, admin) -> None:
    org, other = uuid4(), uuid4()
    for i in range(100):
        at = T0 + i * SLOT
        await store.persist([result(org, "http", HealthStatus.HEALTHY, at),
                             result(other, "http", HealthStatus.HEALTHY, at)] if i < 3 else
                            [result(org, "http", HealthStatus.HEALTHY, at)], at)
    slots = [r["slot"] for r in await admin.fetch(
        "SELECT slot FROM health_check_history WHERE org_id = $1 ORDER BY slot", org)]
    assert len(slots) == 96
    assert slots[0] == T0 + 4 * SLOT and slots[-1] == T0 + 99 * SLOT
    assert await admin.fetchval("SELECT count(*) FROM health_check_history WHERE org_id = $1", other) == 3


async def test_an_hourly_type_beside_a_15_minute_type_in_one_org_keeps_its_own_96_rows(store: Store, admin) -> None:
    """Four days of hourly Xledger checks and the last 25 hours of 15-minute http checks in one org: each type
    keeps its own latest 96 rows (Xledger four days, http one day), neither is pruned by the other's count."""
    org = uuid4()
    hours = 100
    for i in range(hours * 4):  # every 15-minute slot of 100 hours
        at = T0 + i * SLOT
        batch = []
        if i % 4 == 0:
            batch.append(result(org, "xledger", HealthStatus.HEALTHY, at))
        if i >= (hours - 25) * 4:
            batch.append(result(org, "http", HealthStatus.HEALTHY, at))
        if batch:
            await store.persist(batch, at)
    kept = {kind: [r["slot"] for r in await admin.fetch(
        "SELECT slot FROM health_check_history WHERE org_id = $1 AND integration_type = $2 ORDER BY slot", org, kind)]
        for kind in ("xledger", "http")}
    assert kept["xledger"] == [T0 + timedelta(hours=h) for h in range(hours - 96, hours)]
    assert kept["http"] == [T0 + i * SLOT for i in range(hours * 4 - 96, hours * 4)]


async def test_one_insert_of_many_rows_prunes_set_based(store: Store, admin) -> None:
    org = uuid4()
    await admin.execute("""
        INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at)
        SELECT $1, 'http', $2::timestamptz + make_interval(mins => 15 * g), 'healthy', 1, now()
        FROM generate_series(0, 199) g""", org, T0)
    assert await admin.fetchval("SELECT count(*) FROM health_check_history") == 96
    assert await admin.fetchval("SELECT min(slot) FROM health_check_history") == T0 + 104 * SLOT


async def test_load_integrations_returns_enabled_rows_of_the_org(store: Store, admin) -> None:
    org, other = uuid4(), uuid4()
    await admin.executemany(
        "INSERT INTO integration_config (org_id, integration_type, config, credential_ref, enabled) "
        "VALUES ($1, $2, $3::jsonb, $4, $5)",
        [(org, "http", json.dumps({"url": "https://a.example"}), None, True),
         (org, "xledger", "{}", "vault-id-1", False),
         (other, "http", "{}", None, True)])
    rows = await store.load_integrations(org)
    assert [(r.org_id, r.integration_type, r.config) for r in rows] == [(org, "http", {"url": "https://a.example"})]
    assert len(await store.load_integrations()) == 2


async def test_status_and_history_reads(store: Store, admin) -> None:
    org = uuid4()
    await admin.execute("INSERT INTO integration_config (org_id, integration_type, config) VALUES ($1, 'http', '{}')",
                        org)  # reads show configured, enabled integrations only
    await store.persist([result(org, "http", HealthStatus.HEALTHY, T0)], T0)
    assert [r["status"] for r in await store.status(org)] == ["healthy"]
    assert [r["slot"] for r in await store.history(org)] == [T0]


class FlakyPool:
    """Wraps a real pool; the first `failures` acquisitions fail as if the server had gone away."""

    def __init__(self, pool: asyncpg.Pool, failures: int) -> None:
        self.pool, self.failures, self.calls = pool, failures, 0

    def acquire(self, **options):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError(111, "Connection refused")
        return self.pool.acquire(**options)


def fast_retrying(attempts: int) -> AsyncRetrying:
    return AsyncRetrying(retry=default_retrying().retry, stop=stop_after_attempt(attempts), wait=wait_none(),
                         reraise=True)


async def test_transient_database_errors_are_retried_and_the_write_lands(store: Store, admin) -> None:
    flaky = FlakyPool(store.pool, failures=2)
    await Store(flaky, retrying=fast_retrying(5)).persist([result(uuid4(), "http", HealthStatus.HEALTHY, T0)], T0)
    assert flaky.calls == 3
    assert await admin.fetchval("SELECT count(*) FROM integration_health_status") == 1


async def test_persist_gives_up_with_persist_error_after_bounded_retries(store: Store) -> None:
    flaky = FlakyPool(store.pool, failures=10)
    with pytest.raises(PersistError, match="could not persist 1 results: ConnectionRefusedError"):
        await Store(flaky, retrying=fast_retrying(3)).persist([result(uuid4(), "http", HealthStatus.HEALTHY, T0)], T0)
    assert flaky.calls == 3


@pytest.fixture
def recorded_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The store's own default retrying, unchanged but for its sleeps: recorded here instead of slept."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(store_module, "AsyncRetrying", functools.partial(AsyncRetrying, sleep=record))
    return waits


async def test_by_default_a_write_still_lands_when_the_database_refuses_four_times(store: Store, admin,
                                                                                  recorded_waits) -> None:
    flaky = FlakyPool(store.pool, failures=4)
    await Store(flaky).persist([result(uuid4(), "http", HealthStatus.HEALTHY, T0)], T0)
    assert flaky.calls == 5
    assert await admin.fetchval("SELECT count(*) FROM integration_health_status") == 1
    # backing off between the attempts, longer each time
    assert len(recorded_waits) == 4 and recorded_waits == sorted(recorded_waits) and recorded_waits[0] > 0


async def test_by_default_a_write_gives_up_with_persist_error_when_the_fifth_attempt_fails(store: Store, admin,
                                                                                          recorded_waits) -> None:
    flaky = FlakyPool(store.pool, failures=5)
    with pytest.raises(PersistError, match="could not persist 1 results: ConnectionRefusedError"):
        await Store(flaky).persist([result(uuid4(), "http", HealthStatus.HEALTHY, T0)], T0)
    assert flaky.calls == 5
    assert len(recorded_waits) == 4
    assert await admin.fetchval("SELECT count(*) FROM integration_health_status") == 0


async def test_empty_batch_touches_nothing(store: Store) -> None:
    flaky = FlakyPool(store.pool, failures=10)
    await Store(flaky).persist([], T0)
    assert flaky.calls == 0


async def test_a_vendor_incident_is_kept_in_status_and_history_and_a_standing_result_adds_no_history(
        store: Store, admin) -> None:
    org = uuid4()
    failed = result(org, "xledger", HealthStatus.UNREACHABLE, T0, 10_000, "timed out")
    flagged = IntegrationResult(org, "xledger", replace(failed.result, vendor_incident_since=T0))
    await store.persist([flagged], T0)
    await store.persist([flagged], None)  # left standing in the next slots: the status row only
    await store.persist([flagged], None)
    assert await admin.fetchval("SELECT vendor_incident_since FROM integration_health_status") == T0
    history = await admin.fetch("SELECT slot, vendor_incident_since FROM health_check_history")
    assert [tuple(r) for r in history] == [(T0, T0)]
    await admin.execute("INSERT INTO integration_config (org_id, integration_type) VALUES ($1, 'xledger')", org)
    (restored,) = await store.last_results(org)
    assert restored.result.vendor_incident_since == T0
    healed = result(org, "xledger", HealthStatus.HEALTHY, T0 + SLOT)
    await store.persist([healed], T0 + SLOT)
    assert await admin.fetchval("SELECT vendor_incident_since FROM integration_health_status") is None
