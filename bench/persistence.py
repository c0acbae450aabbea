"""Benchmark the engine and persistence on the embedded PostgreSQL (durable settings); prints medians.

    .venv/bin/python bench/persistence.py [--runs 3] [--scale 10000] [--scale-only]

Figures: one org with 10 integrations of which one hangs (run_health_checks wall time); upsert of an
org's 10 status rows; pruning a key that holds 100 history rows; persisting 10,000 results (upsert +
history + prune) into a table that already holds 960,000 history rows (seeded as a day of cycles leaves
it: each key's count and a confirmed status row, vacuumed), with the longest event-loop stall and this
process's CPU time during those persists; the same with every organisation subscribed to the flagged
webhook kinds (a first persist announcing 10,000 events, then the steady state). `--scale-only`: only the
figures at scale.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from bench.common import SEED_COUNTS, SEED_STATUS, print_table, scratch_dir  # noqa: E402
from bench.cycle import BENCH_PG, GcPauses, StallMeter, load  # noqa: E402
from exporter.adapters import ADAPTERS  # noqa: E402
from exporter.adapters.base import AdapterContext  # noqa: E402
from exporter.core.model import HealthStatus, Integration, IntegrationResult, make_result  # noqa: E402
from exporter.demo.embedded_pg import LocalPostgres, embedded_bin_dir  # noqa: E402
from exporter.demo.simulator import Mode, SimState  # noqa: E402
from exporter.demo.simulator import create_app as create_simulator  # noqa: E402
from exporter.storage.migrate import migrate  # noqa: E402
from exporter.storage.store import Store, create_pool  # noqa: E402
from tests.support.fakes import check_org, loopback_session, runner_for  # noqa: E402

SLOT = timedelta(minutes=15)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def median_ms(runs: int, fn: Callable[[int], Awaitable[None]]) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        await fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def results_for(orgs: list, kinds: list[str], at: datetime) -> list[IntegrationResult]:
    return [IntegrationResult(o, k, make_result(HealthStatus.HEALTHY, 12, at)) for o in orgs for k in kinds]


async def at_scale(conn: asyncpg.Connection, store: Store, runs: int, scale: int, rows: list) -> None:
    # 4. at scale: 10,000 results into a table holding 960,000 history rows
    orgs = [uuid4() for _ in range(scale // 5)]
    big_kinds = list(ADAPTERS)
    print(f"filling history with {scale * 96:,} rows…", flush=True)
    async with conn.transaction():  # a day of cycles' rows, in slot order; the newest 96 anyway: no prune
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("""
            INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at)
            SELECT o, k, $3::timestamptz + make_interval(mins => 15 * g), 'healthy', 10,
                   $3::timestamptz + make_interval(mins => 15 * g, secs => 1)
            FROM generate_series(0, 95) g, unnest($1::uuid[]) o, unnest($2::text[]) k
                ORDER BY g""",
                           orgs, big_kinds, T0 - 96 * SLOT)
    await conn.execute(SEED_COUNTS)
    await conn.execute(SEED_STATUS, T0)
    for table in ("health_check_history", "health_check_history_count", "integration_health_status"):
        await conn.execute(f"VACUUM ANALYZE public.{table}")
    print(f"seeded; load {load()}", flush=True)
    cpu: list[float] = []

    times: list[float] = []
    batches = [results_for(orgs, big_kinds, T0 + i * SLOT) for i in range(runs)]  # built before: not a stall
    gc_pauses = GcPauses()
    async with StallMeter() as stalls:
        for i, results in enumerate(batches):
            start, start_cpu = time.perf_counter(), time.process_time()
            await store.persist(results, T0 + i * SLOT)
            times.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
            print(f"persist {i + 1}: {times[-1]:,.0f} ms, CPU {cpu[-1]:,.0f} ms (load {load()})", flush=True)
    ms = statistics.median(times)
    count = await conn.fetchval("SELECT count(*) FROM health_check_history")
    rows.append((f"persist {scale:,} results with {scale * 96:,} history rows (upsert + history + prune)",
                 f"{ms:,.0f} ms", f"table holds {count:,} after; load {load()}"))
    rows.append(("  this process's CPU time in those persists (batch building, encoding)",
                 f"{statistics.median(cpu):,.0f} ms", "the event loop's share of a persist"))
    rows.append(("  longest event-loop stall during those persists (1 ms ticker)", f"{stalls.longest:,.0f} ms",
                 f"goal ≤ 50 ms at 10,000; longest GC pause meanwhile {gc_pauses.longest:,.0f} ms"))

    # 5. the same with every organisation subscribed to the flagged kinds: the first persist announces an
    #    expiring credential on each of the 10,000 rows, the next ones nothing (their flags read twice)
    await conn.execute("INSERT INTO webhook_subscription (org_id, url, events) "
                       "SELECT o, 'https://hooks.example.com/x', "
                       "'{vendor.incident,maintenance.window,credential.expiring}' FROM unnest($1::uuid[]) o", orgs)
    expiring = T0 + timedelta(days=20)

    def flagged(i: int) -> list[IntegrationResult]:
        return [replace(r, result=replace(r.result, credential_expires_at=expiring))
                for r in results_for(orgs, big_kinds, T0 + (runs + i) * SLOT)]
    first = time.perf_counter()
    await store.persist(flagged(0), T0 + runs * SLOT)
    first_ms = (time.perf_counter() - first) * 1000
    events = await conn.fetchval("SELECT count(*) FROM webhook_delivery")
    rows.append((f"the same, every org subscribed: first persist, {events:,} credential.expiring events",
                 f"{first_ms:,.0f} ms", "flags read before and after, events enqueued"))
    ms = await median_ms(runs, lambda i: store.persist(flagged(i + 1), T0 + (runs + i + 1) * SLOT))
    rows.append(("the same, every org subscribed, nothing new (flags read before and after)", f"{ms:,.0f} ms",
                 f"outbox holds {await conn.fetchval('SELECT count(*) FROM webhook_delivery'):,}"))


async def main(runs: int, scale: int, scale_only: bool) -> None:
    scratch = scratch_dir()
    server = LocalPostgres(scratch / "pg", embedded_bin_dir(), settings=BENCH_PG)
    dsn = server.start()
    print(f"embedded PostgreSQL at {dsn}; {runs} runs each, medians")
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        pool = await create_pool(dsn, max_size=4)
        store = Store(pool)
        rows: list[tuple[str, str, str]] = []

        if not scale_only:
            await small(conn, store, runs, rows)
        await at_scale(conn, store, runs, scale, rows)
        await pool.close()
        await conn.close()
    finally:
        server.stop()

    print_table(rows)


async def small(conn: asyncpg.Connection, store: Store, runs: int, rows: list) -> None:
    """Figures 1–3: one organisation's check and persist, and a prune of one key."""
    # 1. one org, 10 integrations, one hangs
    state = SimState(modes={"hang": Mode("hang")})
    sim = web.AppRunner(create_simulator(state), access_log=None)
    await sim.setup()
    site = web.TCPSite(sim, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{sim.addresses[0][1]}"
    org = uuid4()
    kinds = [f"t{i}" for i in range(10)]
    # integration_config allows one row per (org, type), so the ten checks are handed to the runner
    # directly; persisting them is measured on its own below.
    integrations = [Integration(org, "http", {"url": f"{base}/http/{'hang' if i == 0 else k}", "method": "GET"})
                    for i, k in enumerate(kinds)]

    class Fixed:
        async def load_integrations(self, org_id=None):
            return integrations

        async def persist(self, results, slot):
            await store.persist(results, slot)

    async with loopback_session() as session:
        runner = runner_for(AdapterContext(session=session), timeout=10.0)
        ms = await median_ms(runs, lambda i: check_org(org, store=Fixed(), runner=runner, slot=T0 + i * SLOT))
    rows.append(("check an org: 10 integrations, 1 hanging (10 s timeout)", f"{ms:,.0f} ms", "≤ 12,000 ms"))
    await sim.cleanup()

    # 2. upsert of an org's 10 status rows (+ history)
    org2 = uuid4()
    ms = await median_ms(runs, lambda i: store.persist(results_for([org2], kinds, T0 + i * SLOT), T0 + i * SLOT))
    rows.append(("persist one org's 10 results (upsert + history)", f"{ms:,.1f} ms", "< 500 ms"))

    # 3. prune on a key with 100 rows: insert 100 rows in one statement, the trigger keeps 96
    async def prune(i: int) -> None:
        org3 = uuid4()
        await conn.execute("""
            INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, checked_at)
            SELECT $1, 'http', $2::timestamptz + make_interval(mins => 15 * g), 'healthy', 1, now()
            FROM generate_series(0, 99) g""", org3, T0)
    ms = await median_ms(runs, prune)
    rows.append(("insert 100 history rows for one key, pruned to 96", f"{ms:,.1f} ms", "< 200 ms"))



if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=10_000)
    parser.add_argument("--scale-only", action="store_true", help="only the figures at scale (4 and 5)")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.scale, args.scale_only))
