"""The batch read of a cycle's credentials (migration 0024) on real PostgreSQL, attacked: every pair is judged
by the same ownership rule as the single-pair functions, so no org's reference, by name, id, prefix or
duplicate, returns another org's secret or its metadata; and the cache's prefetch then answers the checks."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import pytest

from exporter.core.model import CREDENTIAL_REFUSED, CredentialError, secret_name
from exporter.demo.seed import install_vault_stand_in
from exporter.storage.credentials import REFUSED, CachedCredentials, SupabaseVaultCredentials
from tests.support.fakes import CountingPool

ORG_A = UUID("aaaaaaaa-0000-4000-8000-00000000000a")
ORG_B = UUID("bbbbbbbb-0000-4000-8000-00000000000b")
BATCH = "SELECT org_id, ref, secret, expires_at FROM public.integration_health_credentials($1::uuid[], $2::text[])"
LOOKUP = "SELECT public.integration_health_credential($1, $2)"
EXPIRY = "SELECT public.integration_health_credential_expiry($1, $2)"
FUNCTION = "'public.integration_health_credentials(uuid[], text[])'::regprocedure"


async def plant(admin: asyncpg.Connection) -> dict[str, UUID]:
    """Org A's secrets (and their expiries), one of org B's, one of nobody's, one with a name that is not plain."""
    ids = await install_vault_stand_in(admin, {
        secret_name(ORG_A, "xledger"): "PLANTED-A-xledger", secret_name(ORG_A, "fiken"): "PLANTED-A-fiken",
        secret_name(ORG_B, "own"): "secret-of-B", "legacy": "PLANTED-legacy", f"{ORG_A}/../x": "PLANTED-odd",
        f"{ORG_A}/": "PLANTED-empty-name"})
    await admin.execute("UPDATE vault.secrets SET description = 'rotate; expires_at=2027-05-01T00:00:00Z' "
                        "WHERE name LIKE 'aaaaaaaa%' OR name = 'legacy'")
    return ids


def attacks(ids: dict[str, UUID]) -> list[str]:
    """Org B's references that aim at org A's secrets (and at nobody's, or at malformed names)."""
    a_id = str(ids[f"{ORG_A}/xledger"])
    return ["xledger", "fiken", a_id, a_id.upper(), f"{ORG_A}/xledger", f"../{ORG_A}/xledger", "legacy",
            str(ids["legacy"]), str(ids[f"{ORG_A}/../x"]), str(ids[f"{ORG_A}/"]), "nope", "", ".hidden",
            f"{a_id} ", "xledger%", "x" * 129, "x" * 1_000_000, "xledger' OR true --"]


def flat(rows: list[asyncpg.Record]) -> str:
    return repr([tuple(r) for r in rows])


async def batch(conn: asyncpg.Connection, pairs: list[tuple[UUID | None, str | None]]) -> list[asyncpg.Record]:
    return await conn.fetch(BATCH, [o for o, _ in pairs], [r for _, r in pairs])


async def test_each_pair_gets_what_the_single_pair_functions_answer(admin, vault_pool) -> None:
    """The rule is theirs, pair by pair: one call for every pair, own and attacking, answers as 2 × N calls."""
    ids = await plant(admin)
    pairs = [(org, ref) for org in (ORG_A, ORG_B) for ref in [*attacks(ids), "own", str(ids[f"{ORG_B}/own"])]]
    async with vault_pool.acquire() as conn:
        rows = await batch(conn, pairs)
        single = {}
        for org, ref in pairs:
            secret = await conn.fetchval(LOOKUP, org, ref)
            if secret is not None:
                single[org, ref] = (secret, await conn.fetchval(EXPIRY, org, ref))
    assert {(r["org_id"], r["ref"]): (r["secret"], r["expires_at"]) for r in rows} == single
    assert len(rows) == len(single) == 6  # A: xledger, fiken, its id and upper-case id; B: own, by name and id
    assert single[ORG_A, "xledger"] == ("PLANTED-A-xledger", "2027-05-01T00:00:00Z")


@pytest.mark.parametrize("description", ["", "no token", "expires_at=2027-05-01", "x expires_at=" + "9" * 100,
                                         "xexpires_at=2027", "expires_at=;expires_at=abc", "a,expires_at=b;c",
                                         "tab\texpires_at=2028-01-01T00:00:00Z\tend", "expires_at=", "EXPIRES_AT=1"])
async def test_the_expiry_value_is_the_one_the_single_pair_function_finds(admin, vault_pool, description) -> None:
    await plant(admin)
    await admin.execute("UPDATE vault.secrets SET description = $1 WHERE name = $2", description,
                        secret_name(ORG_A, "fiken"))
    async with vault_pool.acquire() as conn:
        rows = await batch(conn, [(ORG_A, "fiken")])
        assert [r["expires_at"] for r in rows] == [await conn.fetchval(EXPIRY, ORG_A, "fiken")]


async def test_another_orgs_references_return_none_of_its_secrets_in_any_column(admin, vault_pool) -> None:
    """Org B asks for everything of A's it can name, beside its own, with duplicates: only its own comes back."""
    ids = await plant(admin)
    pairs = [(ORG_B, ref) for ref in attacks(ids)] * 2 + [(ORG_B, "own"), (ORG_B, "own")]
    async with vault_pool.acquire() as conn:
        rows = await batch(conn, pairs)
    assert [tuple(r) for r in rows] == [(ORG_B, "own", "secret-of-B", None)], "duplicates answered once"
    assert "PLANTED" not in flat(rows) and "2027" not in flat(rows)


async def test_one_orgs_pairs_beside_anothers_never_lend_it_their_secrets(admin, vault_pool) -> None:
    """In one call, A's own pairs resolve while B's pairs naming the same refs and ids resolve to nothing."""
    ids = await plant(admin)
    a_id = str(ids[f"{ORG_A}/xledger"])
    pairs = [(ORG_A, "xledger"), (ORG_B, "xledger"), (ORG_A, a_id), (ORG_B, a_id), (ORG_B, "fiken"),
             (ORG_A, "fiken")]
    async with vault_pool.acquire() as conn:
        rows = await batch(conn, pairs)
    assert sorted((r["org_id"], r["ref"], r["secret"]) for r in rows) == sorted([
        (ORG_A, "xledger", "PLANTED-A-xledger"), (ORG_A, a_id, "PLANTED-A-xledger"),
        (ORG_A, "fiken", "PLANTED-A-fiken")])
    assert all(r["org_id"] == ORG_A for r in rows)


async def test_nulls_and_malformed_refs_are_skipped_and_oversized_calls_refused(admin, vault_pool) -> None:
    """A NULL org or ref, a megabyte ref: no row, no error. More than 10,000 pairs, or arrays of different
    lengths: refused outright, so the service chunks its cycle."""
    await plant(admin)
    async with vault_pool.acquire() as conn:
        rows = await batch(conn, [(None, "xledger"), (ORG_A, None), (ORG_A, "x" * 1_000_000), (ORG_A, "fiken")])
        assert [(r["org_id"], r["ref"]) for r in rows] == [(ORG_A, "fiken")]
        assert await conn.fetch(BATCH, None, ["xledger"]) == []
        assert len(await batch(conn, [(ORG_A, "fiken")] * 10_000)) == 1
        with pytest.raises(asyncpg.ProgramLimitExceededError, match="at most 10000 pairs per call"):
            await batch(conn, [(ORG_A, "fiken")] * 10_001)
        with pytest.raises(asyncpg.InvalidParameterValueError, match="2 org_ids but 1 refs"):
            await conn.fetch(BATCH, [ORG_A, ORG_B], ["fiken"])
        with pytest.raises(asyncpg.exceptions.DataError):  # PostgreSQL text cannot hold NUL: the client refuses
            await batch(conn, [(ORG_A, "fik\x00en")])


async def test_the_provider_keeps_bad_refs_from_sql_and_answers_the_rest(admin, vault_pool) -> None:
    """NUL bytes and megabyte strings are refused before the database; one bad ref never blocks the others."""
    ids = await plant(admin)
    vault = SupabaseVaultCredentials(vault_pool)
    keys = [(ORG_A, "fik\x00en"), (ORG_A, "x" * 1_000_000), (ORG_A, "fiken"), *((ORG_B, r) for r in attacks(ids))]
    found = await vault.read_many(keys)
    assert set(found) == set(keys)
    assert found[ORG_A, "fiken"].secret.get_secret_value() == "PLANTED-A-fiken"
    assert found[ORG_A, "fiken"].expires_at == datetime(2027, 5, 1, tzinfo=UTC)
    assert [k for k, v in found.items() if v != REFUSED] == [(ORG_A, "fiken")]
    with pytest.raises(ValueError, match="at most 2000 pairs per read"):
        await vault.read_many([(ORG_A, f"r{n}") for n in range(2_001)])


@pytest.mark.parametrize("role", ["anon", "authenticated", "integration_health_reader"])
async def test_only_the_service_role_may_call_it(admin, role) -> None:
    await plant(admin)
    async with admin.transaction():
        await admin.execute(f"SET LOCAL ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await batch(admin, [(ORG_A, "xledger")])


async def test_it_is_security_definer_with_an_empty_search_path(admin) -> None:
    row = await admin.fetchrow("SELECT prosecdef, proconfig, l.lanname FROM pg_proc p JOIN pg_language l "
                               f"ON l.oid = p.prolang WHERE p.oid = {FUNCTION}")
    assert (row["prosecdef"], row["proconfig"], row["lanname"]) == (True, ['search_path=""'], "plpgsql")
    grantees = await admin.fetch("SELECT grantee::regrole::text AS r FROM pg_proc, aclexplode(proacl) "
                                 f"WHERE oid = {FUNCTION} AND privilege_type = 'EXECUTE'")
    assert {r["r"] for r in grantees} - {await admin.fetchval("SELECT current_user")} == {"service_role"}


async def test_after_a_prefetch_the_checks_reads_cost_no_query_and_a_refusal_is_read_again(admin, vault_pool) -> None:
    """One query for the cycle's pairs (chunked by batch_size); then gets and expiries from memory; a secret
    the vendor refused (forget) is read from the vault on the next get, rotated."""
    ids = await plant(admin)
    counting = CountingPool(vault_pool)
    cached = CachedCredentials(SupabaseVaultCredentials(counting, batch_size=3), ttl=300, monotonic=lambda: 0.0)
    keys = [(ORG_A, "xledger"), (ORG_A, "fiken"), (ORG_B, "own"), (ORG_B, "xledger"), (ORG_B, str(ids["legacy"]))]
    await cached.prefetch(keys)
    assert counting.queries == 2  # 5 pairs, 3 a call
    assert (await cached.get(ORG_A, "xledger")).get_secret_value() == "PLANTED-A-xledger"
    assert await cached.expiry(ORG_A, "fiken") == datetime(2027, 5, 1, tzinfo=UTC)
    assert (await cached.get(ORG_B, "own")).get_secret_value() == "secret-of-B"
    assert await cached.expiry(ORG_B, "own") is None
    for ref in ("xledger", str(ids["legacy"])):
        with pytest.raises(CredentialError, match=CREDENTIAL_REFUSED):
            await cached.get(ORG_B, ref)
    assert counting.queries == 2
    await cached.prefetch(keys[:3])  # fresh: nothing to read
    assert counting.queries == 2
    await admin.execute("UPDATE vault.secrets SET secret = 'rotated' WHERE name = $1", secret_name(ORG_A, "xledger"))
    cached.forget(ORG_A, "xledger")
    assert (await cached.get(ORG_A, "xledger")).get_secret_value() == "rotated"
    assert counting.queries == 3
