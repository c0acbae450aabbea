"""The API's reading of JWT claims (exporter/core/claims.py) against the SQL function row-level security calls:
the same claim sets, run through `public.integration_health_claimed_org_ids()` as PostgREST runs it
(a transaction, role `authenticated`, `request.jwt.claims` set locally), must grant the same organisations."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.claims import claimed_org_ids
from tests.support.claims import CLAIM_SETS, DIGITS, A, B


async def sql_claimed_org_ids(conn: asyncpg.Connection, claims: dict[str, Any]) -> frozenset[UUID]:
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE authenticated")
        await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", json.dumps(claims))  # = SET LOCAL
        return frozenset(await conn.fetchval("SELECT public.integration_health_claimed_org_ids()"))


@pytest.mark.parametrize(("claims", "granted"), [(c, g) for _, c, g in CLAIM_SETS], ids=[n for n, _, _ in CLAIM_SETS])
async def test_python_and_sql_grant_the_same_organisations(admin, claims: dict[str, Any],
                                                           granted: frozenset[UUID]) -> None:
    assert (await sql_claimed_org_ids(admin, claims), claimed_org_ids(claims)) == (granted, granted)


async def test_a_float_the_sql_function_reads_as_digits_python_ignores_granting_less_never_more(admin) -> None:
    claims = {"org_id": 1e31}
    assert await sql_claimed_org_ids(admin, claims) == {UUID("10000000-0000-0000-0000-000000000000")}
    assert claimed_org_ids(claims) == frozenset()


def uuid_texts() -> st.SearchStrategy[str]:
    """UUIDs as a token might carry them, well and badly formed."""
    def variants(u: UUID) -> list[str]:
        s = str(u)
        return [s, s.upper(), u.hex, "{" + s + "}", f" {s}", s[:-1], s + "0", s.replace("-", "", 1),
                s.replace("-", "", 2)[::-1], "urn:uuid:" + s]
    return st.builds(variants, st.sampled_from([A, B]) | st.uuids()).flatmap(st.sampled_from)


# Any JSON PostgreSQL's jsonb stores (no NUL, no lone surrogates) but floats, the one known difference; at the
# places the function reads, UUID-like text most of the time.
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
SCALARS = st.none() | st.booleans() | st.integers() | st.just(DIGITS) | TEXT
JSON = st.recursive(SCALARS | uuid_texts(), lambda inner: st.lists(inner, max_size=3) |
                    st.dictionaries(st.sampled_from(["org_id", "org_ids", "id"]) | TEXT, inner, max_size=3),
                    max_leaves=6)
VALUE = st.one_of(uuid_texts(), uuid_texts(), uuid_texts(), SCALARS, JSON)
METADATA = st.fixed_dictionaries({}, optional={"org_id": VALUE, "org_ids": st.lists(VALUE, max_size=4) | VALUE,
                                               "provider": TEXT}) | JSON
CLAIMS = st.fixed_dictionaries({}, optional={"org_id": VALUE, "app_metadata": METADATA, "user_metadata": METADATA,
                                             "org_ids": st.lists(VALUE, max_size=2), "sub": TEXT, "role": VALUE})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=CLAIMS)
async def test_python_and_sql_agree_on_generated_claims(admin, claims: dict[str, Any]) -> None:
    assert claimed_org_ids(claims) == await sql_claimed_org_ids(admin, claims), claims
