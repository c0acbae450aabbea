"""The outbox keeps results through any database failure, not only the ones the store expected."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from exporter.core.model import HealthResult, HealthStatus, IntegrationResult
from exporter.engine.instruments import Instruments
from exporter.engine.outbox import Outbox
from exporter.storage.store import PersistError

SLOT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class FlakyStore:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures, self.written = failures, []

    async def persist(self, results, slot) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.written.extend(results)


@pytest.mark.parametrize("error", [PersistError("database away"), asyncpg.InternalClientError("state 15"),
                                   RuntimeError("a driver bug")], ids=["expected", "asyncpg-internal", "unforeseen"])
async def test_a_failed_write_keeps_the_results_and_the_next_flush_writes_them(error) -> None:
    store = FlakyStore([error])
    outbox = Outbox(store, Instruments(CollectorRegistry(), "test"))  # type: ignore[arg-type]
    results = [IntegrationResult(uuid4(), "http", HealthResult(status=HealthStatus.HEALTHY, latency_ms=1,
                                                               checked_at=SLOT)) for _ in range(3)]
    assert await outbox.submit(results, SLOT) is False
    assert outbox.pending == 3
    assert await outbox.flush() is True
    assert (outbox.pending, store.written) == (0, results)


class PickyStore:
    """Refuses (as PostgreSQL would) any batch holding a result of the `bad` integration types."""

    def __init__(self, bad: set[str]) -> None:
        self.bad, self.written, self.attempts = bad, [], 0

    async def persist(self, results, slot) -> None:
        self.attempts += 1
        if any(r.integration_type in self.bad for r in results):
            raise asyncpg.NumericValueOutOfRangeError("integer out of range")
        self.written.extend(results)


async def test_a_result_the_database_refuses_is_dropped_alone_and_the_rest_is_written() -> None:
    store = PickyStore({"bad"})
    instruments = Instruments(CollectorRegistry(), "test")
    outbox = Outbox(store, instruments)  # type: ignore[arg-type]
    kinds = ["http"] * 5 + ["bad"] + ["http"] * 4
    results = [IntegrationResult(uuid4(), kind, HealthResult(status=HealthStatus.HEALTHY, latency_ms=1,
                                                             checked_at=SLOT)) for kind in kinds]
    assert await outbox.submit(results, SLOT) is True
    assert outbox.pending == 0, "a bad value must not block the queue"
    assert store.written == [r for r in results if r.integration_type != "bad"]
    assert instruments.persist_rejected._value.get() == 1
    assert store.attempts <= 1 + 2 * 4, "bisection, not one statement per result"
    later = [IntegrationResult(uuid4(), "http", HealthResult(status=HealthStatus.HEALTHY, latency_ms=1,
                                                              checked_at=SLOT))]
    assert await outbox.submit(later, SLOT) is True and store.written[-1] == later[0]


class SlowStore:
    """Writes once `release` is set, as a healthy database under load does: slowly, but it lands."""

    def __init__(self) -> None:
        self.release, self.started, self.written, self.cancelled = asyncio.Event(), 0, [], 0

    async def persist(self, results, slot) -> None:
        self.started += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.written.extend(results)


def batch(n: int) -> list[IntegrationResult]:
    return [IntegrationResult(uuid4(), "http", HealthResult(status=HealthStatus.HEALTHY, latency_ms=1,
                                                            checked_at=SLOT)) for _ in range(n)]


async def test_a_write_slower_than_the_submit_bound_is_not_cut_and_finishes_in_the_background() -> None:
    store = SlowStore()
    outbox = Outbox(store, Instruments(CollectorRegistry(), "test"), submit_timeout_s=0.01)  # type: ignore[arg-type]
    results = batch(3)
    assert await outbox.submit(results, SLOT) is False, "the cycle stops waiting at the bound"
    assert outbox.pending == 3
    store.release.set()
    assert await outbox.flush() is True  # waits for the write in progress, then finds nothing left
    assert (store.started, store.cancelled, store.written, outbox.pending) == (1, 0, results, 0)


async def test_the_batch_being_written_is_never_dropped_by_the_bound_nor_counted_as_dropped() -> None:
    store = SlowStore()
    instruments = Instruments(CollectorRegistry(), "test")
    outbox = Outbox(store, instruments, max_results=3, submit_timeout_s=0.01)  # type: ignore[arg-type]
    first, second, third = batch(3), batch(3), batch(3)
    assert await outbox.submit(first, SLOT) is False
    assert await outbox.submit(second, SLOT) is False  # over the bound, but the only older batch is in flight
    assert outbox.pending == 6 and instruments.persist_dropped._value.get() == 0
    assert await outbox.submit(third, SLOT) is False  # now `second` is the oldest not in flight: it goes
    assert outbox.pending == 6 and instruments.persist_dropped._value.get() == 3
    store.release.set()
    assert await outbox.flush() is True
    assert store.written == first + third and outbox.pending == 0, "what was in flight landed, the newest too"


async def test_close_cuts_a_write_still_running_so_nothing_outlives_the_pool() -> None:
    store = SlowStore()
    outbox = Outbox(store, Instruments(CollectorRegistry(), "test"), submit_timeout_s=0.01)  # type: ignore[arg-type]
    assert await outbox.submit(batch(2), SLOT) is False
    await outbox.close()
    assert (store.cancelled, outbox.pending) == (1, 2), "cut, and its results still counted as not written"
    assert not outbox._writing


async def test_a_refused_result_in_a_batch_larger_than_a_chunk_costs_its_chunk_s_halvings_only(monkeypatch) -> None:
    monkeypatch.setattr("exporter.engine.outbox.PERSIST_CHUNK", 8)  # as the store writes: chunks of 8 here
    store = PickyStore({"bad"})
    outbox = Outbox(store, Instruments(CollectorRegistry(), "test"))  # type: ignore[arg-type]
    kinds = ["http"] * 64
    kinds[37] = "bad"
    results = [IntegrationResult(uuid4(), kind, HealthResult(status=HealthStatus.HEALTHY, latency_ms=1,
                                                             checked_at=SLOT)) for kind in kinds]
    assert await outbox.submit(results, SLOT) is True
    assert store.written == [r for r in results if r.integration_type != "bad"]
    # the whole batch once, its 8 chunks, then 2 + 2 + 2 halvings inside the one bad chunk (8 → 4 → 2 → 1)
    assert store.attempts == 1 + 8 + 6, store.attempts


async def test_while_the_retry_backs_off_a_submit_only_queues_one_attempt_for_every_part() -> None:
    """A cycle hands its results over in dozens of parts (engine/handoff.py): with the database away, each
    part used to start its own attempt, logged and counted as another failure. While the retry waits, a
    submit only queues; the retry's one attempt writes every part."""
    store = FlakyStore([PersistError("database away")])
    instruments = Instruments(CollectorRegistry(), "test")
    outbox = Outbox(store, instruments, retry_min_s=0.01)  # type: ignore[arg-type]
    parts = [[IntegrationResult(uuid4(), "http", HealthResult(status=HealthStatus.HEALTHY, latency_ms=1,
                                                              checked_at=SLOT))] for _ in range(6)]
    retrying = asyncio.create_task(outbox.retry_forever())
    try:
        assert await outbox.submit(parts[0], SLOT) is False
        while not outbox._backing_off:
            await asyncio.sleep(0)
        store.failures.append(PersistError("still away"))  # the retry's first attempt fails too
        for part in parts[1:]:
            assert await outbox.submit(part, SLOT) is False, "queued for the retry, not written on its own"
        assert instruments.registry.get_sample_value("integration_health_persist_errors_total") == 1.0
        async with asyncio.timeout(30):
            while outbox.pending:
                await asyncio.sleep(0.01)
    finally:
        retrying.cancel()
        await asyncio.gather(retrying, return_exceptions=True)
    assert store.written == [r for part in parts for r in part], "every part written, in order"
    assert instruments.registry.get_sample_value("integration_health_persist_errors_total") == 2.0, \
        "two attempts failed: the submit's and the retry's first, not one per part"
