"""Soak: many fast cycles over hostile and normal targets; does anything grow? Figures for the notes.

    .venv/bin/python bench/soak.py [--cycles 500] [--orgs 20] [--timeout 0.5]

Slots are a day apart so backoff (capped at 4 h) never spares a hostile target.
Embedded PostgreSQL, the fault server and the vendor simulator as their own processes, the service's
scheduler, runner, outbox and store in this process. Every cycle checks every integration (one per
hostile fault and a few healthy vendors per org) and persists. Reports RSS, open file descriptors and
asyncio tasks after a warm-up and at the end, checks and results per status, and scans every log line
(DEBUG), /metrics and every database row for the planted secret.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, scratch_dir, start_process, start_simulator  # noqa: E402
from exporter.adapters.transport import make_session  # noqa: E402
from exporter.demo.embedded_pg import LocalPostgres, embedded_bin_dir, free_port  # noqa: E402
from exporter.logs import JsonFormatter  # noqa: E402
from exporter.services import build_services, credential_provider, egress_policy  # noqa: E402
from exporter.settings import Settings  # noqa: E402
from exporter.storage.migrate import migrate  # noqa: E402
from exporter.storage.store import (
    Store,  # noqa: E402
    create_pool,  # noqa: E402
)
from exporter.web.metrics import Exposition  # noqa: E402
from tests.helpers import database_text  # noqa: E402
from tests.support.fault_server import ROUTES  # noqa: E402

PLANTED = "PLANTED-soak-3d4e5f60"


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sample(runner) -> dict[str, float]:
    return {"rss_mb": rss_mb(), "fds": open_fds(), "tasks": len(asyncio.all_tasks()),
            "abandoned": len(runner.abandoned)}


async def seed(conn: asyncpg.Connection, faults: str, sim: str, orgs: int, secrets: Path) -> int:
    """Per org: http probes at every fault (with the planted secret in a header) and a healthy Fiken; each
    org's secret in its own directory under `secrets`."""
    rows = []
    for n in range(orgs):
        for path in ROUTES:  # one org per fault path: integration_config is unique per (org, type)
            rows.append((uuid4(), "http", json.dumps({"url": f"{faults}{path}", "method": "GET", "auth": "header",
                                                      "auth_header": "X-Api-Key"}), "soak"))
        rows.append((uuid4(), "fiken", json.dumps({"url": f"{sim}/fiken/t{n}/api/v2"}), "soak"))
    for org_id, *_ in rows:
        (secrets / str(org_id)).mkdir()
        (secrets / str(org_id) / "soak").write_text(PLANTED)
    await conn.copy_records_to_table("integration_config", records=rows,
                                     columns=["org_id", "integration_type", "config", "credential_ref"])
    return len(rows)


async def main(cycles: int, orgs: int, timeout: float) -> None:
    workdir = scratch_dir()
    (workdir / "secrets").mkdir()
    log_buffer = io.StringIO()
    handler = logging.StreamHandler(log_buffer)
    handler.setFormatter(JsonFormatter())  # the production format, context fields and tracebacks included
    logging.basicConfig(level=logging.DEBUG, handlers=[handler])
    server = LocalPostgres(workdir / "pg", embedded_bin_dir())
    dsn = server.start()
    fault_port, sim_port = free_port(), free_port()
    fault_proc = start_process([sys.executable, "-m", "tests.support.fault_server", str(fault_port)], ready="listening")
    sim_proc = start_simulator(sim_port, 0)
    try:
        conn = await asyncpg.connect(dsn)
        await migrate(conn)
        n = await seed(conn, f"http://127.0.0.1:{fault_port}", f"http://127.0.0.1:{sim_port}", orgs,
                       workdir / "secrets")
        await conn.close()
        print(f"{n} integrations ({len(ROUTES)} fault paths × {orgs} + {orgs} healthy Fiken), timeout {timeout} s, "
              f"{cycles} cycles", flush=True)
        settings = Settings(database_url=dsn, check_interval=900, type_intervals={}, check_timeout_seconds=timeout,
                            credential_provider="directory", credentials_dir=workdir / "secrets",
                            egress_allow=("127.0.0.1",))
        pool = await create_pool(dsn, max_size=10)
        statuses: Counter[str] = Counter()
        async with make_session(policy=await egress_policy(settings), limit=settings.max_concurrency) as session:
            services = build_services(settings, store=Store(pool), session=session,
                                      credentials=credential_provider(settings, pool))
            slot0 = datetime(2026, 1, 1, tzinfo=UTC)
            start = time.perf_counter()
            for i in range(cycles):
                slot = slot0 + i * timedelta(days=1)  # a day apart: past any backoff, every check is due
                results = await services.scheduler.run_cycle(slot, slot)
                statuses.update(f"{r.result.status}/{r.result.reason}" for r in results)
                if i == 9:
                    warm = sample(services.scheduler.runner)
                if (i + 1) % 50 == 0:
                    print(f"  cycle {i + 1}: {sample(services.scheduler.runner)}", flush=True)
            wall = time.perf_counter() - start
            await asyncio.sleep(0.5)
            end = sample(services.scheduler.runner)
            metrics_text = Exposition(services.instruments, services.snapshot).render(compressed=False).decode()
            queued = services.outbox.pending
        await pool.close()
        conn = await asyncpg.connect(dsn)
        history = await conn.fetchval("SELECT max(c) FROM (SELECT count(*) c FROM health_check_history "
                                      "GROUP BY org_id, integration_type) x")
        await conn.close()
        leaks = [name for name, text in (("logs (DEBUG)", log_buffer.getvalue()), ("/metrics", metrics_text),
                                         ("database", await database_text(dsn))) if PLANTED in text]
    finally:
        fault_proc.terminate()
        sim_proc.terminate()
        server.stop()
    checks = sum(statuses.values())
    rows = [
        ("cycles, checks", f"{cycles}, {checks:,}", f"{wall:.0f} s wall"),
        ("RSS after 10 cycles → end", f"{warm['rss_mb']:.0f} → {end['rss_mb']:.0f} MB", ""),
        ("open fds after 10 cycles → end", f"{warm['fds']} → {end['fds']}", ""),
        ("asyncio tasks after 10 cycles → end", f"{warm['tasks']} → {end['tasks']}", ""),
        ("abandoned checks still alive at the end", str(end["abandoned"]), ""),
        ("results not yet persisted at the end", str(queued), ""),
        ("most history rows per integration", str(history), "≤ 96"),
        ("planted secret found in", ", ".join(leaks) or "nowhere", "logs at DEBUG, /metrics, every table"),
    ]
    print_table(rows, "value")
    print("\nresults by status/reason over the run:")
    for key, count in sorted(statuses.items()):
        print(f"  {key:32} {count:>8,}")
    if leaks:
        raise SystemExit("the planted secret leaked")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(main(args.cycles, args.orgs, args.timeout))
