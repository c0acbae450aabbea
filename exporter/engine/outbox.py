"""Results waiting to be written: kept in order while the database is away, retried with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from exporter.core.model import IntegrationResult
from exporter.engine.instruments import Instruments
from exporter.storage.store import PERSIST_CHUNK, PersistError, Store

log = logging.getLogger(__name__)

# The database refused the values themselves (out of range, not storable, a constraint): retrying never helps.
DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


@dataclass(frozen=True)
class Batch:
    results: Sequence[IntegrationResult]
    slot: datetime | None  # None: status rows only (results standing unchecked, no history row)


class Outbox:
    """A bounded queue of result batches in front of the store. Nothing is dropped while there is room;
    when full, the oldest batches go first, counted and logged (their newer results are what matter). The
    batch being written and the newest are never among them, so the queue can exceed the bound by those two.
    (A batch whose write failed after some of its chunks landed counts whole if it is dropped later.)"""

    def __init__(self, store: Store, instruments: Instruments, *, max_results: int = 100_000,
                 retry_min_s: float = 1.0, retry_max_s: float = 60.0, submit_timeout_s: float = 15.0) -> None:
        if max_results <= 0:
            raise ValueError("max_results must be > 0")
        self.store, self.instruments, self.max_results = store, instruments, max_results
        self.retry_min_s, self.retry_max_s, self.submit_timeout_s = retry_min_s, retry_max_s, submit_timeout_s
        self._batches: deque[Batch] = deque()
        self._writing: set[asyncio.Future[bool]] = set()  # the loop keeps only weak references to tasks
        self._in_flight: Batch | None = None  # the batch flush is writing now
        self._waiting: set[asyncio.Future[None]] = set()  # one per submit waiting for a write: close waits for them
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._backing_off = False  # retry_forever is waiting to try again: a submit meanwhile only queues

    @property
    def pending(self) -> int:
        return sum(len(b.results) for b in self._batches)

    async def submit(self, results: Sequence[IntegrationResult], slot: datetime | None) -> bool:
        """Queue a batch and try to write everything queued; True when the queue is empty afterwards.

        The wait is bounded: a database that stops answering must not hold up the cycle that submitted. The
        write itself is not cut at that bound: a slow but healthy one (100,000 results under load) finishes
        in the background instead of being rolled back and started over; one that hangs is ended by the
        store's command timeout and retried. Either way the results stay queued until they are written."""
        if results:
            self._batches.append(Batch(results, slot))
            self._enforce_bound()
        if self._backing_off:  # the database is away: the retry writes these too, one attempt for them all
            self.instruments.persist_queue.set(self.pending)  # (a cycle hands over dozens of parts)
            return False
        writing = asyncio.ensure_future(self.flush())
        self._writing.add(writing)  # held until done, even if the submitter stops waiting or is cancelled
        writing.add_done_callback(self._writing.discard)
        returned = asyncio.get_running_loop().create_future()
        self._waiting.add(returned)
        try:
            return await asyncio.wait_for(asyncio.shield(writing), self.submit_timeout_s)
        except TimeoutError:
            log.warning("database write still running after %.0f s; the cycle goes on, %d results wait for it",
                        self.submit_timeout_s, self.pending)
            return False
        finally:
            returned.set_result(None)
            self._waiting.discard(returned)

    async def flush(self) -> bool:
        """Write queued batches oldest first; stop at the first failure and leave the rest queued."""
        async with self._lock:
            while self._batches:
                batch = self._in_flight = self._batches[0]
                try:
                    await self._write(batch)
                except Exception as exc:  # whatever the database did, the results stay queued
                    self.instruments.persist_errors.inc()
                    self.instruments.persist_queue.set(self.pending)
                    why = exc if isinstance(exc, PersistError) else f"unexpected {type(exc).__name__}"
                    log.warning("database write failed; %d results kept for retry: %s", self.pending, why)
                    self._wake.set()
                    return False
                finally:
                    self._in_flight = None
                self._batches.popleft()  # still the first: the bound never drops the batch in flight
            self.instruments.persist_queue.set(0)
            return True

    async def close(self) -> None:
        """At exit, after the last timed flush: a write still running past the grace is cut, so nothing
        outlives the pool (its results stay counted in `pending`, and the exit says so). The submits waiting
        for it return before this does: a task of their own (the cycle's early hand-off) is then over too."""
        writing = list(self._writing)
        for task in writing:
            task.cancel()
        if writing:
            await asyncio.wait(writing)  # their outcome is theirs; a cancellation of the exit itself still raises
        if self._waiting:
            await asyncio.wait(list(self._waiting))

    async def _write(self, batch: Batch) -> None:
        """Persist a batch; when the database refuses its data, write it in halves until the offending
        results are alone, drop those (counted and logged) and write the rest: one bad value never
        blocks the queue. A batch larger than the store's chunk is first cut into chunks, so a bad value
        costs one chunk's halvings, not the whole cycle's. Re-writing a part that already landed is harmless
        (the upsert keeps the newest, the history is unique per slot, an event is announced once)."""
        try:
            await self.store.persist(batch.results, batch.slot)
        except DATA_ERRORS as exc:
            if len(batch.results) == 1:
                r = batch.results[0]
                self.instruments.persist_rejected.inc()
                log.error("the database refused a result (%s); dropped it", type(exc).__name__,
                          extra={"org_id": str(r.org_id), "integration_type": r.integration_type,
                                 "slot": batch.slot.isoformat() if batch.slot else None})
                return
            results = batch.results
            step = PERSIST_CHUNK if len(results) > PERSIST_CHUNK else len(results) // 2
            for at in range(0, len(results), step):
                await self._write(Batch(results[at:at + step], batch.slot))

    async def retry_forever(self) -> None:
        """Background task: while anything is queued, retry with exponential backoff."""
        delay = self.retry_min_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._backing_off = True
            try:
                while self._batches:
                    await asyncio.sleep(delay)
                    if await self.flush():
                        log.info("database writes recovered; queue flushed")
                        delay = self.retry_min_s
                        break
                    delay = min(self.retry_max_s, delay * 2)
            finally:
                self._backing_off = False

    def _enforce_bound(self) -> None:
        """Drop the oldest batches while over the bound, never the newest nor the one being written."""
        dropped = 0
        while self.pending > self.max_results:
            at = next((n for n, b in enumerate(self._batches) if b is not self._in_flight), None)
            if at is None or at == len(self._batches) - 1:
                break
            dropped += len(self._batches[at].results)
            del self._batches[at]
        if dropped:
            self.instruments.persist_dropped.inc(dropped)
            log.error("write queue full (%d results): dropped the %d oldest results", self.max_results, dropped)
        self.instruments.persist_queue.set(self.pending)
