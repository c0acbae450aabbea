"""Side by side with Prometheus blackbox_exporter, in one run; prints medians. Not a test.

    .venv/bin/python bench/blackbox.py [--targets 5000] [--runs 3] [--concurrency 256]

The same N plain HTTP targets on the same simulator (a separate process). Ours: one full service
cycle (runner, classification, backoff state, snapshot, metrics, persistence into the embedded
PostgreSQL) in this process, with the default pooled connections and with a fresh connection per
check. blackbox_exporter (Debian's prometheus-blackbox-exporter, a separate process): N `/probe`
requests from this process at the same concurrency; its CPU is read from /proc, and this driver's own
CPU is reported separately. CPU-ms per check and wall time, and the ratio ours / blackbox.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import aiohttp
import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch_dir, start_process, start_simulator  # noqa: E402
from exporter.adapters.transport import make_session  # noqa: E402
from exporter.demo.embedded_pg import LocalPostgres, embedded_bin_dir, free_port  # noqa: E402
from exporter.services import build_services, credential_provider, egress_policy  # noqa: E402
from exporter.settings import Settings  # noqa: E402
from exporter.storage.migrate import migrate  # noqa: E402
from exporter.storage.store import (
    Store,  # noqa: E402
    create_pool,  # noqa: E402
)

BLACKBOX_CONFIG = """modules:
  http_get:
    prober: http
    timeout: 10s
    http:
      method: GET
      preferred_ip_protocol: ip4
"""


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


async def ours(dsn: str, base: str, n: int, concurrency: int, fresh: bool, slot: datetime) -> tuple[float, float]:
    """One service cycle over n http integrations: (wall s, CPU ms per check) of this process."""
    settings = Settings(database_url=dsn, type_intervals={}, max_concurrency=concurrency, credential_provider="none",
                        egress_allow=("127.0.0.1",))
    pool = await create_pool(dsn, max_size=10)
    try:
        async with make_session(policy=await egress_policy(settings), limit=concurrency, force_close=fresh) as session:
            services = build_services(settings, store=Store(pool), session=session,
                                      credentials=credential_provider(settings, pool))
            cpu0, wall0 = time.process_time(), time.perf_counter()
            results = await services.scheduler.run_cycle(slot, slot)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        await pool.close()
    assert len(results) == n and all(r.result.status.value == "healthy" for r in results), "checks failed"
    return wall, cpu * 1000 / n


async def blackbox(bb_url: str, bb: psutil.Process, base: str, n: int, concurrency: int) -> tuple[float, float, float]:
    """n probes through blackbox_exporter: (wall s, its CPU ms per probe, the driver's CPU ms per probe)."""
    sem = asyncio.Semaphore(concurrency)
    ok = 0

    async def probe(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal ok
        async with sem, session.get(f"{bb_url}/probe", params={"module": "http_get",
                                                               "target": f"{base}/http/t{i}"}) as resp:
            ok += "probe_success 1" in await resp.text()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        bb0, cpu0, wall0 = cpu_s(bb), time.process_time(), time.perf_counter()
        await asyncio.gather(*(probe(session, i) for i in range(n)))
        wall = time.perf_counter() - wall0
        bb_ms, driver_ms = (cpu_s(bb) - bb0) * 1000 / n, (time.process_time() - cpu0) * 1000 / n
    assert ok == n, f"only {ok} of {n} probes succeeded"
    return wall, bb_ms, driver_ms


async def main(n: int, runs: int, concurrency: int, latency_ms: int) -> None:
    binary = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if not binary:
        sys.exit("blackbox_exporter not found: apt-get install prometheus-blackbox-exporter")
    tmp = scratch_dir()
    server = LocalPostgres(tmp / "pg", embedded_bin_dir(), fast=True)
    dsn = server.start()
    sim_port, bb_port = free_port(), free_port()
    sim = start_simulator(sim_port, latency_ms)
    (tmp / "bb.yml").write_text(BLACKBOX_CONFIG)
    bb_proc = start_process([binary, f"--config.file={tmp / 'bb.yml'}", f"--web.listen-address=127.0.0.1:{bb_port}"])
    base, bb_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{bb_port}"
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        await conn.copy_records_to_table("integration_config", columns=["org_id", "integration_type", "config"],
                                         records=[(uuid4(), "http", json.dumps({"url": f"{base}/http/t{i}",
                                                                                "method": "GET"}))
                                                  for i in range(n)])
        await conn.close()
        await asyncio.sleep(1)  # let blackbox_exporter start
        bb = psutil.Process(bb_proc.pid)
        figures: dict[str, list[tuple[float, ...]]] = {"ours, pooled": [], "ours, fresh": [], "blackbox": []}
        slot = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(runs):
            figures["ours, pooled"].append(await ours(dsn, base, n, concurrency, False, slot + (3 * i) * timedelta(hours=1)))
            figures["ours, fresh"].append(await ours(dsn, base, n, concurrency, True, slot + (3 * i + 1) * timedelta(hours=1)))
            figures["blackbox"].append(await blackbox(bb_url, bb, base, n, concurrency))
            print(f"  run {i + 1}: " + ", ".join(f"{k} {v[-1][1]:.3f} CPU-ms" for k, v in figures.items()), flush=True)
    finally:
        bb_proc.terminate()
        sim.terminate()
        server.stop()

    def med(key: str, idx: int) -> float:
        return statistics.median(f[idx] for f in figures[key])

    bb_ms = med("blackbox", 1)
    print(f"\n{n:,} HTTP targets, simulator +{latency_ms} ms, concurrency {concurrency}, median of {runs} runs\n")
    print(f"{'':34} {'wall s':>8} {'CPU-ms/check':>13} {'ratio to blackbox':>18}")
    for key in ("ours, pooled", "ours, fresh"):
        print(f"{key + ' (whole service cycle)':34} {med(key, 0):8.2f} {med(key, 1):13.3f} {med(key, 1) / bb_ms:18.2f}")
    print(f"{'blackbox_exporter (fresh, always)':34} {med('blackbox', 0):8.2f} {bb_ms:13.3f} {1:18.2f}")
    print(f"{'  its driver (this process)':34} {'':8} {med('blackbox', 2):13.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop",
                        help="the event loop to run on: uvloop, as the service does (cli.run_service), or asyncio's")
    args = parser.parse_args()
    print(f"event loop: {args.loop}")
    run = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        run = uvloop.run
    run(main(args.targets, args.runs, args.concurrency, args.latency_ms))
