"""Benchmark webhook delivery latency: from the commit that writes an event to its arrival at a receiver.

    .venv/bin/python bench/webhooks.py [--events 1000] [--poll 1.0]

A loopback receiver (verifying every signature) and the delivery worker with its default settings
(16 requests in flight, 100 claimed per round, idle poll of `--poll` s), on the embedded PostgreSQL.
Two shapes: a burst (one cycle persists 1,000 integrations whose outage is confirmed, so 1,000 events
commit together, through Store.persist) and a trickle (events committed one at a time, 50 a second).
Prints p50 / p99 / max latency, and the persist cost of confirming statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from bench.common import print_table, scratch_dir  # noqa: E402
from exporter.core.events import EventType, VendorIncident, make_event  # noqa: E402
from exporter.core.model import HealthStatus, IntegrationResult, make_result  # noqa: E402
from exporter.core.sealing import Keyring, new_key  # noqa: E402
from exporter.core.webhooks import new_secret  # noqa: E402
from exporter.demo.embedded_pg import LocalPostgres, embedded_bin_dir  # noqa: E402
from exporter.engine.instruments import Instruments  # noqa: E402
from exporter.engine.notifier import Notifier  # noqa: E402
from exporter.storage.migrate import migrate  # noqa: E402
from exporter.storage.store import Store, create_pool  # noqa: E402
from exporter.storage.webhooks import Webhooks, enqueue  # noqa: E402
from tests.support.fakes import loopback_session  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SLOT = timedelta(minutes=15)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def wait_for(receiver: Receiver, n: int) -> None:
    while len(receiver.accepted) < n:
        await asyncio.sleep(0.01)


async def burst(store: Store, receiver: Receiver, org, n: int) -> tuple[list[float], float]:
    """n integrations of one org go down; the second failing cycle confirms all n in one persist."""
    kinds = [f"http{i}" for i in range(n)]
    for slot in range(2):
        results = [IntegrationResult(org, k, make_result(HealthStatus.UNREACHABLE, 10, T0 + slot * SLOT, "HTTP 503"))
                   for k in kinds]
        start = time.perf_counter()
        await store.persist(results, T0 + slot * SLOT)
        persist_ms = (time.perf_counter() - start) * 1000
    committed = time.monotonic()
    await wait_for(receiver, n)
    return [(receiver.arrival_times[i] - committed) * 1000 for i in receiver.accepted], persist_ms


async def trickle(pool: asyncpg.Pool, receiver: Receiver, org, n: int, rate: float) -> list[float]:
    """n events committed one at a time, `rate` a second."""
    committed: dict[str, float] = {}
    for i in range(n):
        event = make_event(EventType.VENDOR_INCIDENT, org, T0, VendorIncident(integration_type=f"t{i}", since=T0), i)
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [event])
        committed[str(event.id)] = time.monotonic()
        await asyncio.sleep(1 / rate)
    await wait_for(receiver, n)
    return [(receiver.arrival_times[i] - committed[i]) * 1000 for i in committed]


async def main(events: int, poll_s: float) -> None:
    server = LocalPostgres(scratch_dir() / "pg", embedded_bin_dir())
    dsn = server.start()
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.close()
        pool = await create_pool(dsn, max_size=10)
        store, webhooks = Store(pool), Webhooks(pool, Keyring.parse(new_key("bench")))
        rows = []
        for name in ("burst", "trickle"):
            org, receiver = uuid4(), Receiver()
            receiver.secret = new_secret()
            runner = web.AppRunner(receiver.app(), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            await webhooks.subscribe(org, f"http://127.0.0.1:{runner.addresses[0][1]}/hook",
                                     [t.value for t in EventType], receiver.secret, 10)
            async with loopback_session() as session:
                notifier = Notifier(webhooks, session, Instruments(CollectorRegistry(), "bench"), poll_s=poll_s)
                stop = asyncio.Event()
                worker = asyncio.create_task(notifier.run_forever(stop))
                if name == "burst":
                    latencies, persist_ms = await burst(store, receiver, org, events)
                    rows.append((f"persist {events} results confirming {events} outages (+ outbox)",
                                 f"{persist_ms:.0f} ms", "one transaction: status, history, confirmed, outbox"))
                else:
                    latencies = await trickle(pool, receiver, org, events, rate=50)
                stop.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            await runner.cleanup()
            assert receiver.duplicates == 0 and len(receiver.accepted) == events
            note = (f"{events} events in one commit" if name == "burst"
                    else f"{events} events, one commit each, 50/s; idle poll {poll_s:g} s")
            rows.append((f"{name}: latency p50 / p99 / max",
                         f"{percentile(latencies, 0.5):.0f} / {percentile(latencies, 0.99):.0f} / "
                         f"{max(latencies):.0f} ms", note))
            rows.append((f"{name}: mean", f"{statistics.mean(latencies):.0f} ms", "commit → receiver"))
        await pool.close()
        print_table(rows, value_header="figure")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--poll", type=float, default=1.0, help="the idle poll (EXPORTER_WEBHOOK_POLL_SECONDS)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.poll))
