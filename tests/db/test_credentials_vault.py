"""The Supabase Vault provider against a vault-compatible schema (created here, in the test database only)."""

from __future__ import annotations

import pytest

from exporter.core.model import CredentialError
from exporter.demo.seed import install_vault_stand_in
from exporter.storage.credentials import SupabaseVaultCredentials
from exporter.storage.store import create_pool


@pytest.fixture
async def vault_pool(db_dsn):
    pool = await create_pool(db_dsn, role="service_role")
    yield pool
    await pool.close()


async def test_vault_resolves_a_secret_by_name_and_by_id(admin, vault_pool) -> None:
    ids = await install_vault_stand_in(admin, {"xledger-acme": "xl-token-1"})
    vault = SupabaseVaultCredentials(vault_pool)
    assert (await vault.get("xledger-acme")).get_secret_value() == "xl-token-1"
    assert (await vault.get(str(ids["xledger-acme"]))).get_secret_value() == "xl-token-1"


async def test_missing_vault_secret_is_a_credential_error(admin, vault_pool) -> None:
    await install_vault_stand_in(admin, {})
    with pytest.raises(CredentialError, match="credential 'nope' not found in the vault"):
        await SupabaseVaultCredentials(vault_pool).get("nope")


async def test_missing_vault_schema_is_a_credential_error_not_a_crash(vault_pool) -> None:
    with pytest.raises(CredentialError, match="vault lookup for 'x' failed: UndefinedTableError"):
        await SupabaseVaultCredentials(vault_pool).get("x")
