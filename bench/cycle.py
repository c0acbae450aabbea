"""Benchmark one service cycle at scale; prints medians. Not a test: figures go in the issue notes.

    .venv/bin/python bench/cycle.py [--integrations 10000] [--orgs 2000] [--runs 3]

Embedded PostgreSQL, the simulator as a separate process (50 ms per answer, 1 % of targets hanging),
the service's own scheduler in this process (max concurrency 256, 10 s timeout). Reports cycle wall
time, exporter CPU per check, persistence time, peak RSS, /metrics render time and size, and the longest
event-loop lag the service's own probe (integration_health_event_loop_lag_seconds) saw during each cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, start_simulator  # noqa: E402
from exporter.adapters import ADAPTERS  # noqa: E402
from exporter.adapters.transport import make_session  # noqa: E402
from exporter.core.model import secret_name  # noqa: E402
from exporter.demo.embedded_pg import LocalPostgres, embedded_bin_dir, free_port  # noqa: E402
from exporter.demo.seed import install_vault_stand_in  # noqa: E402
from exporter.demo.simulator import FAKES  # noqa: E402
from exporter.engine.loop_lag import LoopLagProbe  # noqa: E402
from exporter.services import build_services, credential_provider, egress_policy  # noqa: E402
from exporter.settings import Settings  # noqa: E402
from exporter.storage.migrate import migrate  # noqa: E402
from exporter.storage.store import (
    Store,  # noqa: E402
    create_pool,  # noqa: E402
)
from exporter.web.metrics import Exposition  # noqa: E402

KINDS = tuple(ADAPTERS)
SECRETS = {f"bench-{kind}": FAKES[kind].credential("bench")[0] for kind in KINDS}  # ref → secret; fakes accept any


def config(kind: str, base: str, tenant: str) -> dict:
    """The simulator fake's own config for the type; the http target is read with a plain GET (no auth)."""
    if kind == "http":
        return {"url": f"{base}/http/{tenant}", "method": "GET"}
    return FAKES[kind].config(base, tenant)


async def seed(conn: asyncpg.Connection, base: str, integrations: int, orgs: int, hang: set[int]) -> list[str]:
    rows, hanging = [], []
    org_ids = [uuid4() for _ in range(orgs)]
    for n in range(integrations):
        kind = KINDS[n % len(KINDS)]
        tenant = f"t{n}"
        if n in hang:
            hanging.append(tenant)
        rows.append((org_ids[n // len(KINDS) % orgs], kind, json.dumps(config(kind, base, tenant)), f"bench-{kind}"))
    await install_vault_stand_in(conn, {secret_name(org, ref): value
                                        for org in org_ids for ref, value in SECRETS.items()})
    await conn.copy_records_to_table("integration_config", records=rows,
                                     columns=["org_id", "integration_type", "config", "credential_ref"])
    return hanging


async def set_modes(port: int, tenants: list[str]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for t in tenants:
            async with session.put(f"http://127.0.0.1:{port}/_sim/tenants/{t}", json={"mode": "hang"}) as resp:
                assert resp.status == 200


async def loop_stall_during(metrics, snapshot) -> float:
    """The longest gap (ms) a 1 ms ticker sees on the event loop while a stale /metrics renders off it."""
    snapshot.version += 1
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await metrics.render_off_loop()
    done.set()
    await ticker
    return max(gaps) * 1000


async def lag_during(gauge, work):
    """Await `work` with the service's lag probe running (its window spans the whole of it); the gauge's value."""
    probe = asyncio.create_task(LoopLagProbe(gauge, window_s=86400).run_forever())
    try:
        result = await work
    finally:
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    return result, gauge.collect()[0].samples[0].value


async def main(integrations: int, orgs: int, runs: int, latency_ms: int) -> None:
    server = LocalPostgres(Path(tempfile.mkdtemp()) / "pg", embedded_bin_dir())
    dsn = server.start()
    sim_port = free_port()
    sim = start_simulator(sim_port, latency_ms)
    base = f"http://127.0.0.1:{sim_port}"
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        hanging = await seed(conn, base, integrations, orgs, set(range(0, integrations, 100)))
        await conn.close()
        await set_modes(sim_port, hanging)
        print(f"{integrations:,} integrations in {orgs:,} orgs, {len(hanging)} hanging, simulator +{latency_ms} ms; "
              f"{runs} cycles", flush=True)
        settings = Settings(database_url=dsn, check_interval=900, type_intervals={}, max_concurrency=256,
                            egress_allow=("127.0.0.1",))
        pool = await create_pool(dsn, max_size=10)
        async with make_session(policy=await egress_policy(settings), limit=settings.max_concurrency) as session:
            services = build_services(settings, store=Store(pool), session=session,
                                      credentials=credential_provider(settings, pool))
            persist_times: list[float] = []
            original = services.store.persist

            async def timed_persist(results, slot):
                start = time.perf_counter()
                await original(results, slot)
                persist_times.append(time.perf_counter() - start)

            services.store.persist = timed_persist  # type: ignore[method-assign]
            walls, cpus, lags = [], [], []
            slot = datetime(2026, 1, 1, tzinfo=UTC)
            for i in range(runs):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                at = slot + i * timedelta(minutes=15)
                results, lag = await lag_during(services.instruments.loop_lag, services.scheduler.run_cycle(at, at))
                walls.append(time.perf_counter() - wall0)
                lags.append(lag * 1000)
                cpus.append((time.process_time() - cpu0) / len(results) * 1000)
                print(f"  cycle {i + 1}: {walls[-1]:.2f} s wall, {cpus[-1]:.3f} CPU-ms/check, "
                      f"{len(results)} checked, persist {persist_times[-1] * 1000:.0f} ms, "
                      f"longest event-loop lag {lags[-1]:.0f} ms", flush=True)
            render, render_gz = [], []
            exposition = Exposition(services.instruments, services.snapshot)
            for times, gz in ((render, False), (render_gz, True)):
                services.snapshot.version += 1  # as after a cycle: the first scrape renders, the rest hit the cache
                for _ in range(11):
                    start = time.perf_counter()
                    body = exposition.render(compressed=gz)
                    times.append((time.perf_counter() - start) * 1000)
                sizes = (len(gzip.decompress(body)) if gz else len(body), len(body))
            stalls = [await loop_stall_during(exposition, services.snapshot) for _ in range(3)]
            statuses = {s: sum(1 for r in results if r.result.status == s) for s in ("healthy", "degraded", "unreachable")}
        await pool.close()
    finally:
        sim.terminate()
        server.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("cycle wall time", f"{statistics.median(walls):.2f} s", "goal ≤ 11 s (10 s timeout + ≤ 1 s)"),
        ("exporter CPU per check (whole process: checks, classification, metrics, persistence)",
         f"{statistics.median(cpus):.3f} ms", ""),
        ("persist one cycle (upsert + history + prune)", f"{statistics.median(persist_times) * 1000:.0f} ms", ""),
        ("peak RSS of the exporter process", f"{rss_mb:.0f} MB", "goal ≤ 250 MB"),
        ("/metrics first render after a cycle (plain, gzip)", f"{render[0]:.0f}, {render_gz[0]:.0f} ms",
         f"{sizes[0] / 1024:.0f} KiB, {sizes[1] / 1024:.0f} KiB gzipped"),
        ("/metrics render from the per-snapshot cache (plain, gzip)",
         f"{statistics.median(render[1:]):.2f}, {statistics.median(render_gz[1:]):.2f} ms", "goal: median ≤ 25 ms"),
        ("longest event-loop stall while /metrics renders after a cycle (in a thread)",
         f"{statistics.median(stalls):.0f} ms", "was the whole render, on the loop"),
        ("longest event-loop lag during a cycle (integration_health_event_loop_lag_seconds)",
         f"{statistics.median(lags):.0f} ms", "goal ≤ 50 ms"),
        ("last cycle's statuses", json.dumps(statuses), ""),
    ]
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--integrations", type=int, default=10_000)
    parser.add_argument("--orgs", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.integrations, args.orgs, args.runs, args.latency_ms))
