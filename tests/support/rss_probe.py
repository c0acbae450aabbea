"""Run one http check in a fresh process and print its result and the process's peak RSS, as JSON.

Memory tests compare two such processes (a hostile answer against a small one), so nothing pytest has
allocated blurs the figure:  python -m tests.support.rss_probe URL
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
from uuid import uuid4

from exporter.adapters.base import AdapterContext
from exporter.core.model import Integration
from tests.support.fakes import loopback_session, runner_for


async def probe(url: str) -> dict[str, object]:
    async with loopback_session() as session:
        runner = runner_for(AdapterContext(session=session), timeout=60)
        [r] = await runner.run([Integration(uuid4(), "http", {"url": url, "method": "GET"})])
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"status": r.result.status, "error": r.result.error, "peak_mb": round(peak_mb, 1)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(sys.argv[1]))))
