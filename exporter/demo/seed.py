"""Demo organisations and their integrations, pointed at the built-in simulator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from exporter.core.model import secret_name
from exporter.demo.simulator import FAKES, Mode, SimState

# A stand-in for Supabase Vault on plain PostgreSQL (the demo's embedded server, tests): same view name
# and columns as Supabase's. Never created on a database that has a vault. Only its owner reads it: the
# service reads its own organisation's secrets through public.integration_health_credential (migrations/
# 0011_org_credentials.sql, SECURITY DEFINER), so service_role has no privilege here (and loses any an older
# stand-in gave).
VAULT_STAND_IN = """
CREATE SCHEMA IF NOT EXISTS vault;
CREATE TABLE IF NOT EXISTS vault.secrets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text UNIQUE, secret text NOT NULL);
ALTER TABLE vault.secrets ADD COLUMN IF NOT EXISTS description text NOT NULL DEFAULT '';  -- as Supabase's
CREATE OR REPLACE VIEW vault.decrypted_secrets AS SELECT id, name, secret AS decrypted_secret FROM vault.secrets;
REVOKE ALL ON vault.secrets, vault.decrypted_secrets FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SCHEMA vault FROM PUBLIC, anon, authenticated, service_role;
"""
# Supabase's vault is an extension whose secrets table keeps a nonce per row; the stand-in's has none.
REAL_VAULT = """
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'supabase_vault')
    OR EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('vault.secrets') AND attname = 'nonce')"""
UPSERT_SECRET = """
INSERT INTO vault.secrets (name, secret) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET secret = EXCLUDED.secret
RETURNING id"""

UPSERT_CONFIG = """
INSERT INTO public.integration_config (org_id, integration_type, config, credential_ref)
VALUES ($1, $2, $3::jsonb, $4)
ON CONFLICT (org_id, integration_type) DO UPDATE
    SET config = EXCLUDED.config, credential_ref = EXCLUDED.credential_ref, enabled = true, updated_at = now()"""


@dataclass(frozen=True)
class DemoIntegration:
    org_id: UUID
    integration_type: str
    tenant: str  # the simulator tenant, and the credential_ref (the vault secret is `<org_id>/<tenant>`)
    mode: Mode


ACME = UUID("00000000-0000-4000-a000-00000000ac3e")
GLOBEX = UUID("00000000-0000-4000-a000-0000000610b3")
INITECH = UUID("00000000-0000-4000-a000-000000001417")
DEMO_ORGS = {ACME: "Acme (all healthy)", GLOBEX: "Globex (slow Dynamics)", INITECH: "Initech (failing Xledger)"}

DEMO = [
    *(DemoIntegration(ACME, kind, f"acme-{kind}", Mode("healthy")) for kind in FAKES),  # every type, healthy
    DemoIntegration(GLOBEX, "dynamics365", "globex-dynamics365", Mode("slow", ms=2500)),
    DemoIntegration(GLOBEX, "fiken", "globex-fiken", Mode("healthy")),
    DemoIntegration(INITECH, "xledger", "initech-xledger", Mode("server_error")),
    DemoIntegration(INITECH, "http", "initech-http", Mode("healthy")),
]


def simulator_state() -> SimState:
    return SimState(modes={i.tenant: i.mode for i in DEMO},
                    secrets={i.tenant: FAKES[i.integration_type].credential(i.tenant)[1] for i in DEMO})


async def install_vault_stand_in(conn: asyncpg.Connection, secrets: Mapping[str, str]) -> dict[str, UUID]:
    """Create the vault stand-in unless a real vault exists, store `secrets` by full name (`<org_id>/<ref>`
    for an organisation's: see secret_name), return their ids."""
    if await conn.fetchval(REAL_VAULT):
        raise RuntimeError("this database has a real vault: store the demo's secrets there with "
                           "vault.create_secret(secret, '<org_id>/<ref>')")
    await conn.execute(VAULT_STAND_IN)
    return {name: await conn.fetchval(UPSERT_SECRET, name, value) for name, value in secrets.items()}


async def seed(conn: asyncpg.Connection, base: str) -> None:
    """Insert or refresh the demo rows and their secrets (the simulator's port changes between runs)."""
    secrets = {secret_name(i.org_id, i.tenant): FAKES[i.integration_type].credential(i.tenant)[0] for i in DEMO}
    await install_vault_stand_in(conn, secrets)
    await conn.executemany(UPSERT_CONFIG, [
        (i.org_id, i.integration_type, json.dumps(FAKES[i.integration_type].config(base, i.tenant)), i.tenant)
        for i in DEMO])
