"""Find the database: DATABASE_URL when set, otherwise the embedded PostgreSQL in the data directory."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from exporter.localpg import LocalPostgres, embedded_bin_dir
from exporter.settings import Settings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def database_dsn(settings: Settings) -> Iterator[str]:
    """Yield a DSN; an embedded server started here is stopped on exit, its data kept for the next run."""
    if settings.database_url:
        yield settings.database_url
        return
    server = LocalPostgres(settings.data_dir / "pg", embedded_bin_dir())
    already_running = server.running_port() is not None
    log.info("starting the embedded PostgreSQL in %s", server.data_dir)
    dsn = server.start()
    try:
        yield dsn
    finally:
        if not already_running:
            server.stop()
