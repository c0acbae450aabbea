"""Row-level security as PostgREST / Supabase run it: SET LOCAL ROLE + request.jwt.claims."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from exporter.storage.migrate import load_migrations, migrate
from tests.conftest import dsn_for, migrated_template

ORG_A, ORG_B = uuid4(), uuid4()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TABLES = ("integration_config", "integration_health_status", "health_check_history", "integration_sync_runs",
          "webhook_subscription", "webhook_delivery")
GLOBAL_ROWS = ("maintenance_window",)  # tables whose org_id NULL means every organisation, readable by all
CLIENT_ROLES = ("anon", "authenticated")
# What client roles may execute: authenticated runs the claims function inside its SELECT policies,
# and the timeline read model, which runs as the caller (RLS decides its rows).
EXECUTABLE = {"anon": set(), "authenticated": {
    "integration_health_claimed_org_ids()", "integration_health_timeline(integration_type text, hours integer)"}}
SUPABASE_TEMPLATE = "ih_template_supabase"
# Supabase's roles and default privileges, for the role that migrates (supabase/postgres,
# migrations/db/init-scripts/00000000000000-initial-schema.sql): every new table, sequence and
# function in public is granted ALL to the client roles unless a migration takes it back.
SUPABASE_DEFAULTS = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN NOINHERIT; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; END IF;
END $$;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
"""


@pytest.fixture(scope="module")
async def supabase_template(pg_server: str) -> str:
    """A migrated template database made as Supabase makes one: its roles and default privileges first."""
    return await migrated_template(pg_server, SUPABASE_TEMPLATE, SUPABASE_DEFAULTS)


@pytest.fixture(params=["postgres", "supabase"])
async def db_dsn(request, pg_server: str, template_db: str, supabase_template: str) -> AsyncIterator[str]:
    """Each test here runs twice: on plain PostgreSQL's defaults and on Supabase's (which grant clients ALL)."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server)
    try:
        template = template_db if request.param == "postgres" else supabase_template
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        yield dsn_for(pg_server, name)
        await conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def seeded(admin: asyncpg.Connection) -> asyncpg.Connection:
    for org in (ORG_A, ORG_B):
        await admin.execute("INSERT INTO integration_config (org_id, integration_type, config) "
                            "VALUES ($1, 'http', '{}')", org)
        await admin.execute("INSERT INTO integration_health_status (org_id, integration_type, status, latency_ms, "
                            "checked_at) VALUES ($1, 'http', 'healthy', 5, $2)", org, NOW)
        await admin.execute("INSERT INTO health_check_history (org_id, integration_type, slot, status, latency_ms, "
                            "checked_at) VALUES ($1, 'http', $2, 'healthy', 5, $2)", org, NOW)
        await admin.execute("INSERT INTO integration_sync_runs (org_id, integration_type, scheduled_for, outcome) "
                            "VALUES ($1, 'http', $2, 'success')", org, NOW)
        await seed_webhook(admin, org)
    for org in (ORG_A, ORG_B, None):  # None: a window for every organisation
        await admin.execute("INSERT INTO maintenance_window (org_id, starts_at, ends_at, reason) "
                            "VALUES ($1, $2, $3, 'upgrade')", org, NOW, NOW + timedelta(hours=1))
    return admin


async def seed_webhook(admin: asyncpg.Connection, org: uuid.UUID) -> uuid.UUID:
    """A subscription of `org` with its secret and one pending delivery."""
    sub = await admin.fetchval("INSERT INTO webhook_subscription (org_id, url, events) VALUES ($1, "
                               "'https://hooks.example.com/in', '{integration.status_changed}') RETURNING id", org)
    await admin.execute("INSERT INTO webhook_secret (subscription_id, secret) VALUES ($1, $2)", sub, "s" * 40)
    await admin.execute("INSERT INTO webhook_delivery (event_id, subscription_id, org_id, event_type, payload) "
                        "VALUES (gen_random_uuid(), $1, $2, 'integration.status_changed', '{}')", sub, org)
    return sub


async def as_role(conn: asyncpg.Connection, role: str, claims: dict[str, Any] | None, sql: str, *args: Any):
    """Run one statement the way PostgREST does: a transaction with a local role and local JWT claims."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL ROLE {role}")
        if claims is not None:
            await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", json.dumps(claims))
        return await conn.fetch(sql, *args)


@pytest.mark.parametrize("table", TABLES)
async def test_authenticated_user_reads_only_its_own_org(seeded, table: str) -> None:
    rows = await as_role(seeded, "authenticated", {"sub": "u1", "org_id": str(ORG_A)}, f"SELECT org_id FROM {table}")
    assert [r["org_id"] for r in rows] == [ORG_A]


@pytest.mark.parametrize("claims", [
    {"app_metadata": {"org_id": str(ORG_B)}},
    {"app_metadata": {"org_ids": [str(ORG_B), "not-a-uuid"]}},
])
async def test_org_claims_in_app_metadata_are_honoured(seeded, claims) -> None:
    rows = await as_role(seeded, "authenticated", claims, "SELECT org_id FROM integration_health_status")
    assert [r["org_id"] for r in rows] == [ORG_B]


async def test_a_member_of_two_orgs_sees_both(seeded) -> None:
    claims = {"org_id": str(ORG_A), "app_metadata": {"org_ids": [str(ORG_B)]}}
    rows = await as_role(seeded, "authenticated", claims, "SELECT org_id FROM integration_health_status")
    assert {r["org_id"] for r in rows} == {ORG_A, ORG_B}


# Supabase lets every user edit their own user_metadata: an org named there proves nothing.
USER_EDITABLE_CLAIMS = [
    {"user_metadata": {"org_id": str(ORG_A)}},
    {"user_metadata": {"org_ids": [str(ORG_A)]}},
    {"user_metadata": {"app_metadata": {"org_id": str(ORG_A)}}},
]


@pytest.mark.parametrize("claims", [None, {}, {"org_id": "garbage"}, {"org_id": 42}, {"app_metadata": "x"},
                                    *USER_EDITABLE_CLAIMS])
async def test_authenticated_without_a_valid_org_claim_sees_nothing(seeded, claims) -> None:
    rows = await as_role(seeded, "authenticated", claims, "SELECT * FROM integration_health_status")
    assert rows == []


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("claims", USER_EDITABLE_CLAIMS, ids=["org_id", "org_ids", "nested-app_metadata"])
async def test_an_org_named_only_in_user_editable_metadata_opens_no_table(seeded, claims, table: str) -> None:
    assert await as_role(seeded, "authenticated", claims, f"SELECT org_id FROM {table}") == []
    # the same org as an app_metadata claim (set by the server, not the user) is honoured
    rows = await as_role(seeded, "authenticated", {"app_metadata": {"org_id": str(ORG_A)}},
                         f"SELECT org_id FROM {table}")
    assert [r["org_id"] for r in rows] == [ORG_A]


@pytest.mark.parametrize("sql", [
    "INSERT INTO integration_health_status (org_id, integration_type, status, checked_at) "
    "VALUES ('{org}', 'fiken', 'healthy', now())",
    "UPDATE integration_health_status SET status = 'unreachable' WHERE org_id = '{org}'",
    "DELETE FROM health_check_history WHERE org_id = '{org}'",
    "UPDATE integration_config SET enabled = false WHERE org_id = '{org}'",
    "INSERT INTO integration_sync_runs (org_id, integration_type, scheduled_for, outcome) "
    "VALUES ('{org}', 'fiken', now(), 'success')",
])
async def test_authenticated_user_cannot_write_even_its_own_org(seeded, sql: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(seeded, "authenticated", {"org_id": str(ORG_A)}, sql.format(org=ORG_A))
    assert await seeded.fetchval("SELECT count(*) FROM integration_health_status WHERE status = 'healthy'") == 2


async def test_service_role_reads_and_writes_every_org(seeded) -> None:
    await as_role(seeded, "service_role", None,
                  "UPDATE integration_health_status SET status = 'degraded' WHERE org_id = ANY($1::uuid[])",
                  [ORG_A, ORG_B])
    rows = await as_role(seeded, "service_role", None, "SELECT DISTINCT status FROM integration_health_status")
    assert [r["status"] for r in rows] == ["degraded"]


async def test_every_table_has_rls_enabled_and_forced(admin) -> None:
    rows = await admin.fetch("SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                             "WHERE relname = ANY($1::text[])", list(TABLES))
    assert sorted((r["relname"], r["relrowsecurity"], r["relforcerowsecurity"]) for r in rows) == sorted(
        (t, True, True) for t in TABLES)


async def test_claim_function_can_be_replaced_by_a_deployer(seeded) -> None:
    """A deployer with a membership table swaps the function; every policy follows it."""
    await seeded.execute(f"""
        CREATE OR REPLACE FUNCTION public.integration_health_claimed_org_ids() RETURNS uuid[]
        LANGUAGE sql STABLE AS $$ SELECT ARRAY['{ORG_B}'::uuid] $$""")
    rows = await as_role(seeded, "authenticated", {"org_id": str(ORG_A)}, "SELECT org_id FROM integration_config")
    assert [r["org_id"] for r in rows] == [ORG_B]




async def test_the_reporting_role_reads_status_and_history_of_every_org_but_not_config(seeded) -> None:
    rows = await as_role(seeded, "integration_health_reader", None, "SELECT DISTINCT org_id FROM health_check_history")
    assert {r["org_id"] for r in rows} == {ORG_A, ORG_B}
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(seeded, "integration_health_reader", None, "SELECT * FROM integration_config")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(seeded, "integration_health_reader", None, "DELETE FROM integration_health_status")


async def test_an_org_reads_its_own_maintenance_windows_and_the_global_ones_only(seeded) -> None:
    rows = await as_role(seeded, "authenticated", {"app_metadata": {"org_id": str(ORG_B)}},
                         "SELECT org_id FROM maintenance_window")
    assert sorted((r["org_id"] for r in rows), key=lambda org: org is None) == [ORG_B, None]
    rows = await as_role(seeded, "authenticated", {}, "SELECT org_id FROM maintenance_window")
    assert [r["org_id"] for r in rows] == [None]  # no org claimed: the global windows only, which name nobody


@pytest.mark.parametrize("role", ["authenticated", "integration_health_reader"])
async def test_only_the_service_role_writes_maintenance_windows(seeded, role: str) -> None:
    for sql in ("INSERT INTO maintenance_window (org_id, starts_at, ends_at, reason) "
                f"VALUES ('{ORG_A}', now(), now() + interval '1 day', 'mine')",
                "UPDATE maintenance_window SET ends_at = ends_at + interval '7 days'",
                "DELETE FROM maintenance_window"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_role(seeded, role, {"org_id": str(ORG_A)}, sql)
    await as_role(seeded, "service_role", None, "DELETE FROM maintenance_window WHERE org_id IS NULL")
    assert await seeded.fetchval("SELECT count(*) FROM maintenance_window") == 2


async def test_the_reporting_role_reads_every_maintenance_window_for_the_dashboards_annotations(seeded) -> None:
    rows = await as_role(seeded, "integration_health_reader", None, "SELECT org_id FROM maintenance_window")
    assert len(rows) == 3


async def test_a_window_ending_before_it_starts_is_refused_by_the_table_too(seeded) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="maintenance_window_ends_after_start"):
        await as_role(seeded, "service_role", None, "INSERT INTO maintenance_window (starts_at, ends_at, reason) "
                      "VALUES (now(), now() - interval '1 minute', 'backwards')")


async def test_every_table_in_the_schema_has_row_level_security(admin) -> None:
    """A new table added without RLS fails here."""
    rows = await admin.fetch("SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class c "
                             "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                             "AND c.relkind = 'r' ORDER BY relname")
    assert len(rows) >= 5
    for r in rows:
        forced = r["relname"] != "integration_health_migrations"  # the owner must still migrate
        assert (r["relrowsecurity"], r["relforcerowsecurity"]) == (True, forced), r["relname"]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(admin, "authenticated", {}, "SELECT * FROM integration_health_migrations")


async def public_tables(conn: asyncpg.Connection) -> dict[str, str]:
    """Every table the migrations created, discovered (not listed), with a column to touch in an UPDATE."""
    rows = await conn.fetch("""
        SELECT c.relname, (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                           AND NOT a.attisdropped AND a.attidentity = '' AND a.attgenerated = ''
                           ORDER BY a.attnum LIMIT 1) AS col
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1""")
    return {r["relname"]: r["col"] for r in rows}


# What a client role may change, by table: an org admin disables or deletes its own webhook subscriptions
# (under RLS, tested below); it never inserts one (the API judges the URL and makes the secret).
CLIENT_WRITES = {("authenticated", "webhook_subscription"): {"DELETE"}}


@pytest.mark.parametrize("role", ["anon", "authenticated"])
async def test_no_client_role_can_insert_update_or_delete_in_any_table(seeded, role: str) -> None:
    tables = await public_tables(seeded)
    assert set(TABLES) <= set(tables)
    for table, col in tables.items():
        allowed = CLIENT_WRITES.get((role, table), set())
        for op in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert await seeded.fetchval("SELECT has_table_privilege($1, $2, $3)", role, f"public.{table}", op) == (
                op in allowed), (role, op, table)
        for sql in (f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM {table}",  # B rows copied
                    f"UPDATE {table} SET {col} = {col} WHERE true",
                    *([] if "DELETE" in allowed else [f"DELETE FROM {table}"])):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_role(seeded, role, {"org_id": str(ORG_A)}, sql)
    assert await seeded.fetchval("SELECT count(*) FROM integration_health_status") == 2  # nothing changed


async def test_anon_can_read_no_table(seeded) -> None:
    for table in await public_tables(seeded):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_role(seeded, "anon", {"org_id": str(ORG_A)}, f"SELECT * FROM {table}")


async def test_authenticated_reads_no_other_orgs_row_in_any_table(seeded) -> None:
    for table in await public_tables(seeded):
        has_org = await seeded.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                                        "'public' AND table_name = $1 AND column_name = 'org_id'", table)
        if not has_org:  # no org to scope by: no grant at all
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_role(seeded, "authenticated", {"org_id": str(ORG_A)}, f"SELECT * FROM {table}")
            continue
        rows = await as_role(seeded, "authenticated", {"org_id": str(ORG_A)}, f"SELECT org_id FROM {table}")
        global_rows = {None} if table in GLOBAL_ROWS else set()  # org_id NULL: a row for every organisation
        assert {r["org_id"] for r in rows} == {ORG_A} | global_rows, table


async def public_sequences(conn: asyncpg.Connection) -> list[str]:
    """Every sequence in public, discovered (identity and serial columns make them without saying so)."""
    return [r["seq"] for r in await conn.fetch(
        "SELECT format('public.%I', c.relname) AS seq FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1")]


async def public_functions(conn: asyncpg.Connection) -> dict[str, int]:
    """Every function and procedure in public (none belongs to an extension here), by signature."""
    rows = await conn.fetch("SELECT p.oid, format('%s(%s)', p.proname, pg_get_function_identity_arguments(p.oid)) "
                            "AS sig FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace")
    return {r["sig"]: r["oid"] for r in rows}


@pytest.mark.parametrize("role", CLIENT_ROLES)
async def test_no_client_role_can_setval_or_nextval_any_sequence(seeded, role: str) -> None:
    sequences = await public_sequences(seeded)
    assert "public.health_check_history_id_seq" in sequences
    for seq in sequences:
        for privilege in ("USAGE", "SELECT", "UPDATE"):
            assert not await seeded.fetchval("SELECT has_sequence_privilege($1, $2, $3)", role, seq, privilege), (
                role, privilege, seq)
        for sql in (f"SELECT setval('{seq}', 9223372036854775807)", f"SELECT nextval('{seq}')"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_role(seeded, role, {"org_id": str(ORG_A)}, sql)


@pytest.mark.parametrize("role", CLIENT_ROLES)
async def test_client_roles_execute_only_the_allowed_functions(seeded, role: str) -> None:
    functions = await public_functions(seeded)
    assert EXECUTABLE["authenticated"] | {"integration_health_shard_of(org uuid, shards integer)"} <= set(functions)
    executable = {sig for sig, oid in functions.items()
                  if await seeded.fetchval("SELECT has_function_privilege($1, $2::oid, 'EXECUTE')", role, oid)}
    assert executable == EXECUTABLE[role]
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(seeded, role, {}, "SELECT public.integration_health_shard_of(gen_random_uuid(), 64)")


async def test_service_role_still_writes_history_and_runs_what_it_calls(seeded) -> None:
    """The trigger that prunes history fires without EXECUTE; the shard function stays callable."""
    await as_role(seeded, "service_role", None,
                  "INSERT INTO health_check_history (org_id, integration_type, slot, status, checked_at) "
                  "SELECT $1, 'http', $2::timestamptz - make_interval(mins => 15 * n), 'healthy', $2 "
                  "FROM generate_series(1, 100) n",
                  ORG_A, NOW)
    assert await seeded.fetchval("SELECT count(*) FROM health_check_history WHERE org_id = $1", ORG_A) == 96
    [row] = await as_role(seeded, "service_role", None, "SELECT public.integration_health_shard_of($1, 64) AS s",
                          ORG_A)
    assert row["s"] == ORG_A.int % 2**32 % 64


async def test_the_grants_migration_is_what_stops_the_setval_attack(empty_db_dsn: str) -> None:
    """Under Supabase's defaults, before the grants migration a signed-in user can exhaust the history
    sequence and so stop every history (and with it status) write; after it, the same call is refused."""
    grants = next(m for m in load_migrations() if m.name.endswith("_client_grants.sql"))
    attack = "SELECT setval('public.health_check_history_id_seq', 9223372036854775807)"
    write = ("INSERT INTO health_check_history (org_id, integration_type, slot, status, checked_at) "
             "VALUES (gen_random_uuid(), 'http', now(), 'healthy', now())")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await conn.execute(SUPABASE_DEFAULTS)
        await migrate(conn, [m for m in load_migrations() if m.name < grants.name])
        await as_role(conn, "authenticated", {"org_id": str(ORG_A)}, attack)  # the attack works...
        with pytest.raises(asyncpg.SequenceGeneratorLimitExceededError):
            await as_role(conn, "service_role", None, write)  # ...and the monitor can no longer write history
        await conn.execute("ALTER SEQUENCE public.health_check_history_id_seq RESTART")
        await migrate(conn)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_role(conn, "authenticated", {"org_id": str(ORG_A)}, attack)
        await as_role(conn, "service_role", None, write)
    finally:
        await conn.close()


async def test_an_org_admin_cannot_insert_a_webhook_subscription_directly_for_any_org(seeded) -> None:
    """Subscriptions are made through the API, which judges the URL after DNS and generates the secret."""
    for org in (ORG_A, ORG_B):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_role(seeded, "authenticated", {"org_id": str(ORG_A)},
                          "INSERT INTO webhook_subscription (org_id, url, events) "
                          "VALUES ($1, 'https://evil.example/x', '{integration.status_changed}')", org)
    assert await seeded.fetchval("SELECT count(*) FROM webhook_subscription") == 2


async def test_an_org_admin_disables_and_deletes_only_its_own_subscriptions(seeded) -> None:
    claims = {"org_id": str(ORG_A)}
    await as_role(seeded, "authenticated", claims, "UPDATE webhook_subscription SET enabled = false")
    rows = await seeded.fetch("SELECT org_id, enabled FROM webhook_subscription")
    assert {r["org_id"]: r["enabled"] for r in rows} == {ORG_A: False, ORG_B: True}
    for sql in ("UPDATE webhook_subscription SET url = 'https://169.254.169.254/'",  # the URL was judged by the API
                f"UPDATE webhook_subscription SET org_id = '{ORG_B}'"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await as_role(seeded, "authenticated", claims, sql)
    await as_role(seeded, "authenticated", claims, "DELETE FROM webhook_subscription")
    remaining = {t: await seeded.fetchval(f"SELECT array_agg(DISTINCT org_id) FROM {t}")
                 for t in ("webhook_subscription", "webhook_delivery")}
    assert remaining == {"webhook_subscription": [ORG_B], "webhook_delivery": [ORG_B]}  # its deliveries went too
    assert await seeded.fetchval("SELECT count(*) FROM webhook_secret") == 1


@pytest.mark.parametrize("role", CLIENT_ROLES)
async def test_no_client_role_reads_any_webhook_secret_not_even_its_own(seeded, role: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_role(seeded, role, {"org_id": str(ORG_A)}, "SELECT secret FROM webhook_secret")
    rows = await as_role(seeded, "authenticated", {"org_id": str(ORG_A)}, "SELECT * FROM webhook_subscription")
    assert [r["org_id"] for r in rows] == [ORG_A] and "secret" not in rows[0].keys()
