"""The Supabase Vault provider against the vault stand-in (created here, in the test database only): a
reference resolves only to a secret named under its organisation's prefix, read through one SQL function."""

from __future__ import annotations

import json
from uuid import UUID

import asyncpg
import pytest

from exporter.adapters import ADAPTERS
from exporter.adapters.base import AdapterContext
from exporter.core.model import CREDENTIAL_REFUSED, CredentialError, HealthStatus, Reason, secret_name
from exporter.demo.seed import install_vault_stand_in
from exporter.demo.simulator import FAKES
from exporter.storage.credentials import SupabaseVaultCredentials
from tests.support.attacker import AttackerHost
from tests.support.fakes import runner_for

ORG_A = UUID("aaaaaaaa-0000-4000-8000-00000000000a")
ORG_B = UUID("bbbbbbbb-0000-4000-8000-00000000000b")
KINDS = list(ADAPTERS)
LOOKUP = "SELECT public.integration_health_credential($1, $2)"


async def test_vault_resolves_an_orgs_secret_by_name_and_by_id(admin, vault_pool) -> None:
    """The ref is the name after `<org_id>/`, or the secret's id."""
    ids = await install_vault_stand_in(admin, {secret_name(ORG_A, "xledger"): "xl-token-1"})
    vault = SupabaseVaultCredentials(vault_pool)
    assert (await vault.get(ORG_A, "xledger")).get_secret_value() == "xl-token-1"
    assert (await vault.get(ORG_A, str(ids[f"{ORG_A}/xledger"]))).get_secret_value() == "xl-token-1"


def attacks(ids: dict[str, UUID]) -> dict[str, str]:
    """Org B's references to org A's secret `xledger`, and to nothing at all."""
    a_id = str(ids[f"{ORG_A}/xledger"])
    return {"a-name": "xledger", "a-id": a_id, "a-id-upper": a_id.upper(), "name-with-a-id": f"{ORG_A}/xledger",
            "dot-dot": f"../{ORG_A}/xledger", "unprefixed-name": "legacy", "unprefixed-id": str(ids["legacy"]),
            "missing": "nope"}


async def test_another_orgs_secret_is_refused_by_name_id_or_prefix_like_a_missing_one(admin, vault_pool) -> None:
    """Same message for every refusal: B cannot tell A's secrets from absent ones."""
    ids = await install_vault_stand_in(admin, {secret_name(ORG_A, "xledger"): "xl-token-A", "legacy": "old-style"})
    vault = SupabaseVaultCredentials(vault_pool)
    for name, ref in attacks(ids).items():
        with pytest.raises(CredentialError) as refused:
            await vault.get(ORG_B, ref)
        assert str(refused.value) == CREDENTIAL_REFUSED, name


async def test_the_function_returns_nothing_for_another_orgs_secret(admin, vault_pool) -> None:
    """The SQL function is the boundary itself: called directly, it too answers NULL for B."""
    ids = await install_vault_stand_in(admin, {secret_name(ORG_A, "xledger"): "xl-token-A", "legacy": "old-style",
                                               f"{ORG_A}/../x": "odd-name"})
    async with vault_pool.acquire() as conn:
        for name, ref in attacks(ids).items():
            assert await conn.fetchval(LOOKUP, ORG_B, ref) is None, name
        assert await conn.fetchval(LOOKUP, ORG_A, str(ids[f"{ORG_A}/../x"])) is None  # the name is not plain
        assert await conn.fetchval(LOOKUP, ORG_A, str(ids["legacy"])) is None  # no org prefix: nobody's
        assert await conn.fetchval(LOOKUP, ORG_A, "xledger") == "xl-token-A"


async def test_the_service_role_cannot_read_the_vault_directly(admin, vault_pool) -> None:
    """It needs no SELECT on the vault any more, so the stand-in grants none."""
    await install_vault_stand_in(admin, {secret_name(ORG_A, "xledger"): "xl-token-A"})
    async with vault_pool.acquire() as conn:
        for relation in ("vault.decrypted_secrets", "vault.secrets"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {relation}")


async def test_reinstalling_the_stand_in_revokes_what_an_older_one_granted(admin, vault_pool) -> None:
    """Earlier stand-ins granted service_role SELECT on the view; a re-seed takes it back."""
    await install_vault_stand_in(admin, {})
    await admin.execute("GRANT USAGE ON SCHEMA vault TO service_role; "
                        "GRANT SELECT ON vault.decrypted_secrets TO service_role")
    await install_vault_stand_in(admin, {})
    async with vault_pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM vault.decrypted_secrets")


@pytest.mark.parametrize("role", ["anon", "authenticated", "integration_health_reader"])
async def test_only_the_service_role_may_call_the_function(admin, role) -> None:
    """PostgREST exposes public functions: clients must not be able to call this one."""
    await install_vault_stand_in(admin, {secret_name(ORG_A, "xledger"): "xl-token-A"})
    async with admin.transaction():
        await admin.execute(f"SET LOCAL ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await admin.fetchval(LOOKUP, ORG_A, "xledger")


async def test_the_function_is_security_definer_with_an_empty_search_path(admin) -> None:
    """A definer function with a mutable search_path can be hijacked by objects in the caller's schemas."""
    row = await admin.fetchrow("SELECT prosecdef, proconfig, l.lanname FROM pg_proc p JOIN pg_language l "
                               "ON l.oid = p.prolang WHERE p.oid = 'public.integration_health_credential'::regproc")
    assert (row["prosecdef"], row["proconfig"], row["lanname"]) == (True, ['search_path=""'], "plpgsql")
    grantees = await admin.fetch(
        "SELECT grantee::regrole::text AS r FROM pg_proc, aclexplode(proacl) "
        "WHERE oid = 'public.integration_health_credential'::regproc AND privilege_type = 'EXECUTE'")
    assert {r["r"] for r in grantees} - {await admin.fetchval("SELECT current_user")} == {"service_role"}


async def test_missing_vault_schema_is_a_credential_error_not_a_crash(vault_pool) -> None:
    """The function exists before any vault does (migrations ran on a bare database); calling it then fails cleanly."""
    with pytest.raises(CredentialError, match="^vault lookup failed: UndefinedTableError$"):
        await SupabaseVaultCredentials(vault_pool).get(ORG_A, "x")


async def test_a_database_with_a_real_vault_is_not_given_a_stand_in(admin) -> None:
    """Supabase's vault.secrets keeps a nonce per row: the seed refuses to overwrite it and says how to store."""
    await admin.execute("CREATE SCHEMA vault; "
                        "CREATE TABLE vault.secrets (id uuid, name text, secret text, nonce bytea)")
    with pytest.raises(RuntimeError, match=r"vault.create_secret\(secret, '<org_id>/<ref>'\)"):
        await install_vault_stand_in(admin, {"x": "y"})


@pytest.mark.parametrize("attack", ["a-name", "a-id", "name-with-a-id", "dot-dot", "missing"])
async def test_org_b_naming_org_as_vault_secrets_sends_nothing_to_its_host(admin, store, vault_pool, http_session,
                                                                           aiohttp_server, sim, attack) -> None:
    """The attack measured on main, end to end: B's rows name A's five secrets and point at a host B runs."""
    secrets = {secret_name(ORG_A, kind): FAKES[kind].credential(f"PLANTED-A-{kind}")[0] for kind in KINDS}
    ids = await install_vault_stand_in(admin, secrets)
    host = AttackerHost()
    evil = str((await aiohttp_server(host.app(), access_log=None)).make_url("")).rstrip("/")
    state, base = sim
    for kind in KINDS:
        state.secrets[f"a-{kind}"] = FAKES[kind].credential(f"PLANTED-A-{kind}")[1]
    refs = {kind: {"a-name": kind, "a-id": str(ids[f"{ORG_A}/{kind}"]), "name-with-a-id": f"{ORG_A}/{kind}",
                   "dot-dot": f"../{ORG_A}/{kind}", "missing": f"nope-{kind}"}[attack] for kind in KINDS}
    for org, url, ref in [(ORG_B, evil, refs), (ORG_A, base, {k: k for k in KINDS})]:
        for kind in KINDS:
            await admin.execute("INSERT INTO integration_config (org_id, integration_type, config, credential_ref) "
                                "VALUES ($1, $2, $3::jsonb, $4)", org, kind,
                                json.dumps(FAKES[kind].config(url, "evil" if org == ORG_B else f"a-{kind}")), ref[kind])
    runner = runner_for(AdapterContext(session=http_session, credentials=SupabaseVaultCredentials(vault_pool)))

    b_results = await runner.run(await store.load_integrations(ORG_B))
    a_results = await runner.run(await store.load_integrations(ORG_A))

    assert [(r.result.status, r.result.reason, r.result.error) for r in b_results] == \
        [(HealthStatus.DEGRADED, Reason.AUTH, f"credential unavailable: {CREDENTIAL_REFUSED}")] * len(KINDS)
    assert host.received == []
    assert {r.integration_type: r.result.status for r in a_results} == {k: HealthStatus.HEALTHY for k in KINDS}
