"""Postgres I/O: load integrations, persist results (status upsert + history) in set-based statements, a chunk of
keys per transaction."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from tenacity import (
    AsyncRetrying,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from exporter.core.maintenance import Window
from exporter.core.model import CheckState, HealthResult, HealthStatus, Integration, IntegrationResult, Reason
from exporter.core.syncs import SyncRun
from exporter.storage import announcements, webhooks

log = logging.getLogger(__name__)

SELECT_INTEGRATIONS = """
SELECT org_id, integration_type, config, credential_ref, health_mode,
       sync_cron, sync_timezone, sync_period_seconds, sync_grace_seconds, sync_max_duration_seconds,
       sync_warmup_url
FROM public.integration_config
WHERE enabled AND ($1::uuid IS NULL OR org_id = $1)
ORDER BY org_id, integration_type"""

# One round trip for a whole batch: unnest the arrays once, upsert the status rows (never letting an
# older result overwrite a newer one, e.g. a delayed retry) and append the slot's history rows
# (a re-run of the same slot adds nothing). The history trigger prunes to 96 rows per key.
PERSIST_RESULTS = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::text[],
                         $7::text[], $8::int[], $9::timestamptz[], $10::timestamptz[], $11::int[],
                         $12::timestamptz[], $14::boolean[], $15::timestamptz[], $16::timestamptz[])
        AS t(org_id, integration_type, status, latency_ms, checked_at, error_message,
             reason, consecutive_failures, next_check_at, tls_expires_at, rate_limited_streak, passive_until,
             maintenance, vendor_incident_since, credential_expires_at)
), upserted AS (
    INSERT INTO public.integration_health_status AS s
        (org_id, integration_type, status, latency_ms, checked_at, error_message,
         reason, consecutive_failures, next_check_at, tls_expires_at, rate_limited_streak, passive_until,
         maintenance, vendor_incident_since, credential_expires_at)
    SELECT org_id, integration_type, status, latency_ms, checked_at, error_message,
           reason, consecutive_failures, next_check_at, tls_expires_at, rate_limited_streak, passive_until,
           maintenance, vendor_incident_since, credential_expires_at
    FROM input
    ON CONFLICT (org_id, integration_type) DO UPDATE
        SET status = EXCLUDED.status, latency_ms = EXCLUDED.latency_ms,
            checked_at = EXCLUDED.checked_at, error_message = EXCLUDED.error_message,
            reason = EXCLUDED.reason, consecutive_failures = EXCLUDED.consecutive_failures,
            next_check_at = EXCLUDED.next_check_at, rate_limited_streak = EXCLUDED.rate_limited_streak,
            passive_until = EXCLUDED.passive_until, maintenance = EXCLUDED.maintenance,
            vendor_incident_since = EXCLUDED.vendor_incident_since,
            tls_expires_at = coalesce(EXCLUDED.tls_expires_at, s.tls_expires_at),
            credential_expires_at = EXCLUDED.credential_expires_at  -- the engine already carried it over gaps
        WHERE s.checked_at <= EXCLUDED.checked_at
)
INSERT INTO public.health_check_history
    (org_id, integration_type, slot, status, latency_ms, checked_at, error_message, reason, maintenance,
     vendor_incident_since)
SELECT org_id, integration_type, $13, status, latency_ms, checked_at, error_message, reason, maintenance,
       vendor_incident_since
FROM input
WHERE $13::timestamptz IS NOT NULL  -- none: results not checked again (held during a vendor incident)
ON CONFLICT (org_id, integration_type, slot) DO NOTHING"""

SELECT_STATUS = """
SELECT s.org_id, s.integration_type, s.status, s.latency_ms, s.checked_at, s.error_message,
       s.reason, s.consecutive_failures, s.next_check_at, s.tls_expires_at, s.rate_limited_streak, s.passive_until,
       s.maintenance, s.vendor_incident_since, s.credential_expires_at
FROM public.integration_health_status s
JOIN public.integration_config c USING (org_id, integration_type)  -- a disabled or deleted one is not current
WHERE c.enabled AND ($1::uuid IS NULL OR s.org_id = $1)
ORDER BY s.org_id, s.integration_type"""

SELECT_HISTORY = """
SELECT h.org_id, h.integration_type, h.slot, h.status, h.latency_ms, h.checked_at, h.error_message, h.reason,
       h.maintenance, h.vendor_incident_since
FROM public.health_check_history h
JOIN public.integration_config c USING (org_id, integration_type)
WHERE c.enabled AND h.org_id = $1
ORDER BY h.integration_type, h.slot"""

# Runs are read through the view a deployer may redefine over their own export log (migration 0017).
SELECT_RECENT_RUNS = """
SELECT c.org_id, c.integration_type, r.scheduled_for, r.started_at, r.finished_at, r.outcome, r.error_message,
       r.cold_start, r.invocation_latency_ms
FROM public.integration_config c
CROSS JOIN LATERAL (
    SELECT * FROM public.integration_health_sync_runs_source r
    WHERE r.org_id = c.org_id AND r.integration_type = c.integration_type
    ORDER BY r.scheduled_for DESC
    LIMIT $1) r
WHERE c.enabled"""

# The sync scheduler's report: the period (org, type, scheduled_for) is the idempotency key. A retry
# of the same report, or a running run finishing, updates the row; a finished run reported again with
# another outcome changes nothing and returns no row (the API answers 409). The same statement is the
# one documented for schedulers that write directly with the service role.
REPORT_SYNC_RUN = """
INSERT INTO public.integration_sync_runs AS r
    (org_id, integration_type, scheduled_for, started_at, finished_at, outcome, error_message,
     cold_start, invocation_latency_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (org_id, integration_type, scheduled_for) DO UPDATE
    SET started_at = coalesce(EXCLUDED.started_at, r.started_at),
        finished_at = coalesce(EXCLUDED.finished_at, r.finished_at),
        outcome = EXCLUDED.outcome,
        error_message = coalesce(EXCLUDED.error_message, r.error_message),
        cold_start = coalesce(EXCLUDED.cold_start, r.cold_start),
        invocation_latency_ms = coalesce(EXCLUDED.invocation_latency_ms, r.invocation_latency_ms),
        updated_at = now()
    WHERE r.outcome = 'running' OR r.outcome = EXCLUDED.outcome
RETURNING scheduled_for, started_at, finished_at, outcome, error_message, cold_start, invocation_latency_ms"""

SELECT_SYNC_RUN = """
SELECT scheduled_for, started_at, finished_at, outcome, error_message, cold_start, invocation_latency_ms
FROM public.integration_sync_runs
WHERE org_id = $1 AND integration_type = $2 AND scheduled_for = $3"""

# Availability from the stored history: the share of checked slots that were usable (not unreachable),
# slots in a maintenance window left out. The API and the history dashboard use this one expression.
AVAILABILITY = "avg((status <> 'unreachable')::int) FILTER (WHERE NOT maintenance)"

SELECT_AVAILABILITY = f"""
SELECT h.integration_type, ({AVAILABILITY})::float8 AS availability,
       count(*) FILTER (WHERE NOT h.maintenance) AS counted_slots,
       count(*) FILTER (WHERE h.maintenance) AS maintenance_slots
FROM public.health_check_history h
JOIN public.integration_config c USING (org_id, integration_type)
WHERE c.enabled AND h.org_id = $1
GROUP BY h.integration_type
ORDER BY h.integration_type"""

WINDOW_COLUMNS = "id, org_id, integration_type, starts_at, ends_at, reason, created_by, created_at"

# Windows by state at $2 (None: not ended yet, i.e. active or upcoming), optionally those applying to one
# organisation (its own and the global ones); bounded, soonest first.
SELECT_WINDOWS = f"""
SELECT {WINDOW_COLUMNS} FROM public.maintenance_window
WHERE CASE $1::text
        WHEN 'active' THEN starts_at <= $2 AND ends_at > $2
        WHEN 'upcoming' THEN starts_at > $2
        WHEN 'ended' THEN ends_at <= $2
        ELSE ends_at > $2 END
  AND ($3::uuid IS NULL OR org_id IS NULL OR org_id = $3)
ORDER BY starts_at, id
LIMIT $4"""

INSERT_WINDOW = f"""
INSERT INTO public.maintenance_window (org_id, integration_type, starts_at, ends_at, reason, created_by)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {WINDOW_COLUMNS}"""

DELETE_WINDOW = f"DELETE FROM public.maintenance_window WHERE id = $1 RETURNING {WINDOW_COLUMNS}"
MAX_WINDOWS = 1000  # a list bounded in memory and in a response; real fleets have a handful at a time

# Keys per persisted chunk, each written in its own transaction: asyncpg encodes a statement's arrays on the
# event loop in one piece (~10 µs per key for the 15 columns and the event reads), so a chunk stalls the loop
# for ~20 ms whatever the batch, and a transient error retries one chunk, not a whole cycle.
PERSIST_CHUNK = 2_000
# Chunks written at once, each in its own transaction on its own connection: while one prunes its history
# (pruners are serialised, migration 0009) and commits, the next is encoded and its status upsert and history
# insert run on the other core. Their organisations are disjoint, so they never wait for each other's rows.
PERSIST_IN_FLIGHT = 2

# Errors worth retrying: the server or the network went away for a moment, or a transaction lost a race.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    asyncpg.InternalClientError,  # a pooled connection cut off mid-query ("another operation is in progress")
)


class PersistError(RuntimeError):
    """Results could not be written after the retries; the caller keeps them and tries again later."""


def default_retrying(attempts: int = 5) -> AsyncRetrying:
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0  # a persist's chunk takes ~0.1 s; a half-open connection would wait ~15 min
ACQUIRE_TIMEOUT_S = 10.0


async def create_pool(dsn: str, *, role: str | None = "service_role", min_size: int = 1, max_size: int = 10,
                      command_timeout: float = COMMAND_TIMEOUT_S) -> asyncpg.Pool:
    """Open a pool whose sessions run as `role` (RLS applies), or as the DSN's user when role is None.

    Every wait is bounded (connect, each command), so a half-open connection fails as a TimeoutError,
    a transient error, instead of stalling until TCP gives up.
    """
    settings = {"application_name": "integration-health"}
    if role:
        settings["role"] = role  # a session default, so the pool's RESET ALL keeps it
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, server_settings=settings,
                                     init=_init_connection, timeout=CONNECT_TIMEOUT_S, command_timeout=command_timeout)


def _latest(results: Sequence[IntegrationResult]) -> list[list[IntegrationResult]]:
    """One result per (org, type), the latest if a key repeats, grouped by organisation. Keyed by the org id's
    integer, then the type: no (org, type) tuple per result, which at 100,000 results is work for the garbage
    collector, whose full collections of a large heap stall the event loop from any thread."""
    latest: dict[int, dict[str, IntegrationResult]] = {}
    for r in results:
        by_type = latest.setdefault(r.org_id.int, {})
        was = by_type.get(r.integration_type)
        if was is None or was.result.checked_at <= r.result.checked_at:
            by_type[r.integration_type] = r
    return [list(by_type.values()) for by_type in latest.values()]


def _columns(rows: Sequence[IntegrationResult]) -> list[list[Any]]:
    """Columns for unnest, in PERSIST_RESULTS's order (the slot, $13, apart)."""
    return [
        [r.org_id for r in rows],
        [r.integration_type for r in rows],
        [r.result.status.value for r in rows],
        [r.result.latency_ms for r in rows],
        [r.result.checked_at for r in rows],
        [r.result.error for r in rows],
        [r.result.reason.value if r.result.reason else None for r in rows],
        [r.state.consecutive_failures for r in rows],
        [r.state.next_check_at for r in rows],
        [r.result.tls_expires_at for r in rows],
        [r.state.rate_limited_streak for r in rows],
        [r.state.passive_until for r in rows],
        [r.maintenance for r in rows],
        [r.result.vendor_incident_since for r in rows],
        [r.result.credential_expires_at for r in rows],
    ]


def _chunks(results: Sequence[IntegrationResult], size: int) -> list[list[list[Any]]]:
    """The batch as column chunks of about `size` keys, cut between organisations, so each organisation's rows
    move in one transaction: its API never shows half of it in the new cycle (pure data: safe in a thread)."""
    chunks, rows = [], []
    for org_rows in _latest(results):
        rows += org_rows
        if len(rows) >= size:
            chunks.append(_columns(rows))
            rows = []
    if rows:
        chunks.append(_columns(rows))
    return chunks


def _sync_columns(r: asyncpg.Record) -> dict[str, Any] | None:
    if r["sync_cron"] is None and r["sync_period_seconds"] is None:
        return None
    return {"cron": r["sync_cron"], "timezone": r["sync_timezone"], "period_s": r["sync_period_seconds"],
            "grace_s": r["sync_grace_seconds"], "max_duration_s": r["sync_max_duration_seconds"]}


def _run(r: asyncpg.Record) -> SyncRun:
    return SyncRun(r["scheduled_for"], r["outcome"], r["started_at"], r["finished_at"], r["error_message"],
                   r["cold_start"], r["invocation_latency_ms"])


def result_from_row(row: asyncpg.Record) -> IntegrationResult:
    reason = row["reason"] if row["reason"] in Reason.__members__.values() else None
    result = HealthResult(status=HealthStatus(row["status"]), latency_ms=row["latency_ms"] or 0,
                          checked_at=row["checked_at"], error=row["error_message"],
                          reason=Reason(reason) if reason else None, tls_expires_at=row["tls_expires_at"],
                          vendor_incident_since=row["vendor_incident_since"],
                          credential_expires_at=row["credential_expires_at"])
    state = CheckState(row["consecutive_failures"], row["next_check_at"], row["rate_limited_streak"],
                       row["passive_until"])
    return IntegrationResult(row["org_id"], row["integration_type"], result, state, row["maintenance"])


def window_from_row(r: asyncpg.Record) -> Window:
    return Window(r["id"], r["org_id"], r["integration_type"], r["starts_at"], r["ends_at"], r["reason"],
                  r["created_by"], r["created_at"])


class Store:
    """The monitor's database access. Every write is one transaction, retried when transient."""

    def __init__(self, pool: asyncpg.Pool, *, retrying: AsyncRetrying | None = None) -> None:
        self.pool = pool
        self._retrying = retrying or default_retrying()

    async def ping(self) -> None:
        """One round trip, no retry: /readyz asks whether the database answers now."""
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            await conn.fetchval("SELECT 1")

    async def load_integrations(self, org_id: UUID | None = None) -> list[Integration]:
        rows = await self._with_retry(lambda c: c.fetch(SELECT_INTEGRATIONS, org_id))
        return [Integration(r["org_id"], r["integration_type"], r["config"], r["credential_ref"],
                            r["health_mode"], _sync_columns(r), r["sync_warmup_url"]) for r in rows]

    async def recent_sync_runs(self, limit_per_integration: int = 5) -> dict[tuple[UUID, str], list[SyncRun]]:
        """The latest runs of every enabled integration, one round trip."""
        rows = await self._with_retry(lambda c: c.fetch(SELECT_RECENT_RUNS, limit_per_integration))
        runs: dict[tuple[UUID, str], list[SyncRun]] = {}
        for r in rows:
            runs.setdefault((r["org_id"], r["integration_type"]), []).append(_run(r))
        return runs

    async def report_sync_run(self, org_id: UUID, integration_type: str, run: SyncRun) -> tuple[bool, SyncRun]:
        """Record a run idempotently; returns (accepted, the stored run). Not accepted: a finished run
        for that period was already reported with a different outcome, and is left as it was."""
        args = (org_id, integration_type, run.scheduled_for, run.started_at, run.finished_at, run.outcome,
                run.error_message, run.cold_start, run.invocation_latency_ms)
        row = await self._with_retry(lambda c: c.fetchrow(REPORT_SYNC_RUN, *args))
        if row is not None:
            return True, _run(row)
        existing = await self._with_retry(lambda c: c.fetchrow(SELECT_SYNC_RUN, *args[:3]))
        return False, _run(existing)

    async def persist(self, results: Sequence[IntegrationResult], slot: datetime | None) -> None:
        """Upsert status and append history for `slot` (None: status rows only, for results that stand
        unchecked), and enqueue the webhook events of confirmed status changes and of the rows' flag moves
        (vendor incident, maintenance window, credential expiry) in the same transaction, the events behind a
        savepoint (events that cannot be written are logged, never the results' loss); raise PersistError
        when it cannot.

        A large batch is written in chunks of about PERSIST_CHUNK keys cut between organisations, one
        transaction each (an organisation's statuses, history and events always together), its columns built
        in a thread: the event loop only encodes one chunk at a time; PERSIST_IN_FLIGHT chunks are written at
        once. When a chunk fails, no further chunk starts, the ones under way finish, and those written stay
        written; the caller writes the whole batch again, which changes nothing for those (the newest result
        per key wins, a slot's history row is unique, an event is announced once)."""
        if not results:
            return
        if len(results) > PERSIST_CHUNK:
            chunks = await asyncio.to_thread(_chunks, results, PERSIST_CHUNK)
        else:
            chunks = _chunks(results, PERSIST_CHUNK)
        written, failed = 0, None
        running: set[asyncio.Task[int]] = set()

        async def write(columns: list[list[Any]]) -> int:
            await self._with_retry(lambda c: self._write(c, columns, slot))
            return len(columns[0])

        def settle(done: set[asyncio.Task[int]]) -> None:
            nonlocal written, failed
            for task in done:
                if task.exception() is None:
                    written += task.result()
                elif failed is None:
                    failed = task.exception()

        try:
            for columns in chunks:
                if len(running) >= PERSIST_IN_FLIGHT:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    settle(done)
                if failed is not None:
                    break
                running.add(asyncio.create_task(write(columns)))
            if running:
                done, running = await asyncio.wait(running)  # a chunk under way is finished, not cut
                settle(done)
        finally:
            for task in running:  # only when this persist is itself cancelled
                task.cancel()
            if running:
                await asyncio.wait(running)
        if isinstance(failed, TRANSIENT_ERRORS):
            done = f" ({written} of them written)" if written else ""
            raise PersistError(f"could not persist {len(results)} results: {type(failed).__name__}: {failed}"
                               f"{done}") from failed
        if failed is not None:
            raise failed  # the data (the outbox halves the batch to find the value refused)

    async def _write(self, c: asyncpg.Connection, columns: list[list[Any]], slot: datetime | None) -> None:
        """One chunk in one transaction: the flags of subscribed organisations' rows before, the rows, then
        their events behind a savepoint."""
        async with c.transaction():  # the notifications of a change are written with it
            watched = await announcements.watched(c, columns[0], columns[1])
            before = await announcements.flags(c, *watched)
            await c.execute(PERSIST_RESULTS, *columns[:12], slot, *columns[12:])
            try:
                async with c.transaction():  # a savepoint: a failing announcement never costs the results
                    await webhooks.enqueue_status_changes(c, columns[0], columns[1])
                    await announcements.enqueue_news(c, before, *watched)
            except TRANSIENT_ERRORS:
                raise  # the connection or the database: the whole chunk is retried
            except Exception:  # a bug or a bad value in an event: status and history are written without
                log.exception("webhook events of %d results could not be written; the results are stored "
                              "without them", len(columns[0]))

    async def status(self, org_id: UUID | None = None) -> list[asyncpg.Record]:
        return await self._with_retry(lambda c: c.fetch(SELECT_STATUS, org_id))

    async def last_results(self, org_id: UUID | None = None) -> list[IntegrationResult]:
        """The stored status rows as results: what the service restores into its snapshot at start-up."""
        return [result_from_row(r) for r in await self.status(org_id)]

    async def history(self, org_id: UUID) -> list[asyncpg.Record]:
        return await self._with_retry(lambda c: c.fetch(SELECT_HISTORY, org_id))

    async def availability(self, org_id: UUID) -> list[asyncpg.Record]:
        """Per enabled integration of the org: availability over its stored history, maintenance left out."""
        return await self._with_retry(lambda c: c.fetch(SELECT_AVAILABILITY, org_id))

    async def maintenance_windows(self, now: datetime, *, state: str | None = None, org_id: UUID | None = None,
                                  limit: int = MAX_WINDOWS) -> list[Window]:
        """Windows `active`, `upcoming` or `ended` at `now` (None: active or upcoming), soonest first;
        with `org_id`, those applying to it (its own and the global ones)."""
        rows = await self._with_retry(lambda c: c.fetch(SELECT_WINDOWS, state, now, org_id, limit))
        return [window_from_row(r) for r in rows]

    async def add_maintenance_window(self, window: Window) -> Window:
        """Store a new window (its id and created_at are the database's) and return it as stored."""
        args = (window.org_id, window.integration_type, window.starts_at, window.ends_at, window.reason,
                window.created_by)
        return window_from_row(await self._with_retry(lambda c: c.fetchrow(INSERT_WINDOW, *args)))

    async def delete_maintenance_window(self, window_id: UUID) -> Window | None:
        """Remove a window (ending it now, if active, and announcing that end); None when there was none."""
        async def delete(c: asyncpg.Connection) -> Window | None:
            async with c.transaction():
                row = await c.fetchrow(DELETE_WINDOW, window_id)
                if row is not None:
                    await announcements.window_deleted(c, window_from_row(row))
                return window_from_row(row) if row else None

        return await self._with_retry(delete)

    async def _with_retry(self, op: Any) -> Any:
        async for attempt in self._retrying.copy():
            with attempt:
                async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                    return await op(conn)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover
