"""Shared fixtures: a real PostgreSQL (embedded by default, EXPORTER_TEST_PG_BIN for another), one fresh
migrated database per test (cloned from a template, so each test starts clean in ~50 ms)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from hypothesis import settings

from exporter.adapters.base import AdapterContext
from exporter.adapters.client import HttpClient
from exporter.demo.embedded_pg import LocalPostgres, embedded_bin_dir
from exporter.demo.simulator import SimState
from exporter.demo.simulator import create_app as create_simulator
from exporter.services import open_services
from exporter.storage.migrate import migrate
from exporter.storage.store import Store, create_pool
from exporter.web.app import create_app
from tests.support.fakes import loopback_session

TEMPLATE = "ih_template"

# CI explores the same generated examples every run, so a red build is a change's doing, not a new draw;
# runs elsewhere draw fresh examples and keep finding new cases.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


def require_tool(name: str, package: str) -> str:
    """The path of a command-line tool; missing under CI=true fails the test, elsewhere skips with a hint."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: apt-get install {package}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _bin_dir() -> Path:
    configured = os.environ.get("EXPORTER_TEST_PG_BIN")
    if not configured:
        return embedded_bin_dir()
    path = Path(configured)
    if not (path / "postgres").exists():
        raise RuntimeError(f"EXPORTER_TEST_PG_BIN={configured} has no postgres binary")
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The session's PostgreSQL, in a directory of its own: not under pytest's tmp_path, which a second
    pytest session started meanwhile (another checkout, a parallel run) prunes, stopping the server."""
    root = Path(tempfile.mkdtemp(prefix="ih-test-pg-"))
    server = LocalPostgres(root / "data", _bin_dir(), fast=True)
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def dsn_for(server_dsn: str, database: str) -> str:
    return server_dsn.rsplit("/", 1)[0] + "/" + database


async def migrated_template(server_dsn: str, name: str, setup_sql: str = "") -> str:
    """(Re)create database `name`, run `setup_sql` in it (a platform's roles and grants), then the migrations."""
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    conn = await asyncpg.connect(dsn_for(server_dsn, name))
    try:
        if setup_sql:
            await conn.execute(setup_sql)
        await migrate(conn)
    finally:
        await conn.close()
    return name


@pytest.fixture(scope="session")
async def template_db(pg_server: str) -> str:
    return await migrated_template(pg_server, TEMPLATE)


@contextlib.asynccontextmanager
async def scratch_database(server_dsn: str, prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """Create a database of a random name (a copy of `template`, or empty), yield its DSN, drop it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        yield dsn_for(server_dsn, name)
        await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def db_dsn(pg_server: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only (superuser DSN)."""
    async with scratch_database(pg_server, "t", template_db) as dsn:
        yield dsn


@pytest.fixture
async def empty_db_dsn(pg_server: str) -> AsyncIterator[str]:
    """A fresh database with no migrations applied."""
    async with scratch_database(pg_server, "e") as dsn:
        yield dsn


@pytest.fixture
async def admin(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection to the test database, for arranging and inspecting rows."""
    conn = await asyncpg.connect(db_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def store(db_dsn: str) -> AsyncIterator[Store]:
    """The real Store, running as service_role like the service does."""
    pool = await create_pool(db_dsn, role="service_role", max_size=4)
    try:
        yield Store(pool)
    finally:
        await pool.close()


@pytest.fixture
async def http_session() -> AsyncIterator[HttpClient]:
    async with loopback_session() as session:
        yield session


@pytest.fixture
def ctx(http_session: HttpClient) -> AdapterContext:
    return AdapterContext(session=http_session)


@pytest.fixture
async def sim(aiohttp_server) -> tuple[SimState, str]:
    """The vendor simulator on a loopback port: its state (modes, secrets, counts) and its base URL."""
    state = SimState()
    server = await aiohttp_server(create_simulator(state), access_log=None)  # the vendor's log is not ours
    return state, str(server.make_url("")).rstrip("/")


@pytest.fixture
async def service_client(aiohttp_client) -> AsyncIterator:
    """Start the whole service (services opened on a DSN, the web app over them) and return a test client.

    On teardown the app stops first (its shutdown flushes through the pool), then the services close."""
    async with contextlib.AsyncExitStack() as stack:
        async def start(settings, dsn: str, **options):
            services = await stack.enter_async_context(open_services(settings, dsn, **options))
            client = await aiohttp_client(create_app(settings, services))
            stack.push_async_callback(client.close)
            return client
        yield start
