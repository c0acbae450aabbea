"""The vault's expiry convention on real PostgreSQL: `expires_at=<ISO 8601>` in a secret's description, read
through public.integration_health_credential_expiry (service_role only), which returns the value, never the
secret, and nothing for another organisation's secret; the expiry is stored with the status and restored."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import pytest

from exporter.core.model import CheckState, HealthStatus, IntegrationResult, make_result, secret_name
from exporter.demo.seed import install_vault_stand_in
from exporter.storage.credentials import SupabaseVaultCredentials

ORG_A = UUID("aaaaaaaa-0000-4000-8000-00000000000a")
ORG_B = UUID("bbbbbbbb-0000-4000-8000-00000000000b")
EXPIRY = "SELECT public.integration_health_credential_expiry($1, $2)"
END = datetime(2027, 5, 1, tzinfo=UTC)


async def describe(admin: asyncpg.Connection, name: str, description: str) -> None:
    await admin.execute("UPDATE vault.secrets SET description = $2 WHERE name = $1", name, description)


async def test_the_expiry_comes_from_the_description_by_name_and_by_id(admin, vault_pool) -> None:
    name = secret_name(ORG_A, "d365")
    ids = await install_vault_stand_in(admin, {name: "SECRET-VALUE-d365", secret_name(ORG_A, "xl"): "SECRET-xl"})
    await describe(admin, name, "Acme Dynamics client secret; expires_at=2027-05-01T00:00:00Z; owner it@acme")
    vault = SupabaseVaultCredentials(vault_pool)
    assert await vault.expiry(ORG_A, "d365") == END
    assert await vault.expiry(ORG_A, str(ids[name])) == END
    assert await vault.expiry(ORG_A, "xl") is None  # no expires_at: unknown
    assert await vault.expiry(ORG_A, "missing") is None


@pytest.mark.parametrize("description", ["expires_at=2027-05-01", "{x} expires_at=2027-05-01T02:00:00+02:00",
                                         "rotated, expires_at=2027-05-01T00:00:00Z"])
async def test_the_token_may_sit_anywhere_in_the_description(admin, vault_pool, description) -> None:
    await install_vault_stand_in(admin, {secret_name(ORG_A, "d365"): "SECRET-VALUE"})
    await describe(admin, secret_name(ORG_A, "d365"), description)
    assert await SupabaseVaultCredentials(vault_pool).expiry(ORG_A, "d365") == END


async def test_a_malformed_expiry_is_ignored_with_a_warning_that_names_no_secret(admin, vault_pool, caplog) -> None:
    await install_vault_stand_in(admin, {secret_name(ORG_A, "d365"): "SECRET-VALUE-PLANTED"})
    await describe(admin, secret_name(ORG_A, "d365"), "expires_at=SECRET-VALUE-PLANTED")
    with caplog.at_level(logging.DEBUG):
        assert await SupabaseVaultCredentials(vault_pool).expiry(ORG_A, "d365") is None
    assert "its expiry is not an ISO 8601 date or time; ignored" in caplog.text
    assert "SECRET-VALUE" not in caplog.text


async def test_another_orgs_expiry_is_not_readable_by_name_id_or_prefix(admin, vault_pool) -> None:
    name = secret_name(ORG_A, "d365")
    ids = await install_vault_stand_in(admin, {name: "SECRET-VALUE-A"})
    await describe(admin, name, "expires_at=2027-05-01")
    async with vault_pool.acquire() as conn:
        for ref in ("d365", str(ids[name]), f"{ORG_A}/d365", f"../{ORG_A}/d365"):
            assert await conn.fetchval(EXPIRY, ORG_B, ref) is None


async def test_the_function_never_returns_the_secret(admin, vault_pool) -> None:
    await install_vault_stand_in(admin, {secret_name(ORG_A, "d365"): "SECRET-VALUE-A"})
    await describe(admin, secret_name(ORG_A, "d365"), "expires_at=2027-05-01")
    async with vault_pool.acquire() as conn:
        assert await conn.fetchval(EXPIRY, ORG_A, "d365") == "2027-05-01"


@pytest.mark.parametrize("role", ["anon", "authenticated", "integration_health_reader"])
async def test_only_the_service_role_may_call_the_expiry_function(admin, role) -> None:
    await install_vault_stand_in(admin, {secret_name(ORG_A, "d365"): "SECRET-VALUE-A"})
    async with admin.transaction():
        await admin.execute(f"SET LOCAL ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await admin.fetchval(EXPIRY, ORG_A, "d365")


async def test_the_expiry_function_is_security_definer_with_an_empty_search_path(admin) -> None:
    row = await admin.fetchrow("SELECT prosecdef, proconfig FROM pg_proc "
                               "WHERE oid = 'public.integration_health_credential_expiry'::regproc")
    assert (row["prosecdef"], row["proconfig"]) == (True, ['search_path=""'])
    grantees = await admin.fetch(
        "SELECT grantee::regrole::text AS r FROM pg_proc, aclexplode(proacl) "
        "WHERE oid = 'public.integration_health_credential_expiry'::regproc AND privilege_type = 'EXECUTE'")
    assert {r["r"] for r in grantees} - {await admin.fetchval("SELECT current_user")} == {"service_role"}


async def test_the_expiry_is_stored_with_the_status_and_restored(store, admin) -> None:
    await admin.execute("INSERT INTO integration_config (org_id, integration_type, config) VALUES ($1, 'fiken', '{}')",
                        ORG_A)
    t = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    result = replace(make_result(HealthStatus.HEALTHY, 10, t), credential_expires_at=END)
    await store.persist([IntegrationResult(ORG_A, "fiken", result, CheckState())], t)
    [restored] = await store.last_results()
    assert restored.result.credential_expires_at == END
    cleared = make_result(HealthStatus.HEALTHY, 10, t.replace(minute=15))  # the metadata was removed
    await store.persist([IntegrationResult(ORG_A, "fiken", cleared, CheckState())], t.replace(minute=15))
    [restored] = await store.last_results()
    assert restored.result.credential_expires_at is None
