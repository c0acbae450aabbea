"""Which organisations a caller may act for: the operator every one, an app user those its JWT claims name.

`claimed_org_ids` is the Python twin of the SQL function `public.integration_health_claimed_org_ids()`
(migrations/0001_roles_and_claims.sql), which row-level security calls: the API and RLS must grant the
same organisations for the same claims (tests/db/test_claims_sql.py runs both on one table of claim sets).
Claims read: a top-level `org_id`, `app_metadata.org_id`, `app_metadata.org_ids` (a list). Never
`user_metadata`: Supabase users can edit it. A value that is not a UUID is ignored, never an error.

One deliberate difference: a JSON number with a fraction or an exponent (`1e31`) is ignored here, while the
SQL function prints it as digits (`10000000000000000000000000000000`) and reads that as a UUID. Python's
float has lost those digits, so it cannot repeat that; it only ever grants less, never more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

# The SQL function's test, `v ~* '^…$'`: 32 hex digits, a hyphen optional between the usual groups.
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I | re.A)


def _as_text(value: Any) -> str | None:
    """What `->>` / `jsonb_array_elements_text` give for a JSON value, where it could name a UUID at all."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # 32 decimal digits are 32 hex digits
        return str(value)
    return None  # null, true/false, floats, objects and arrays: never 8-4-4-4-12 hex digits here


def _candidates(claims: Mapping[str, Any]) -> Iterator[Any]:
    yield claims.get("org_id")
    app_metadata = claims.get("app_metadata")
    if isinstance(app_metadata, Mapping):
        yield app_metadata.get("org_id")
        org_ids = app_metadata.get("org_ids")
        if isinstance(org_ids, list):
            yield from org_ids


def claimed_org_ids(claims: Mapping[str, Any]) -> frozenset[UUID]:
    """The organisations these JWT claims name, exactly as the RLS function reads them."""
    found = set()
    for value in _candidates(claims):
        text = _as_text(value)
        if text is not None and _UUID_TEXT.fullmatch(text):
            found.add(UUID(text.replace("-", "")))
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling the API: `org_ids` None is the operator (every organisation)."""

    subject: str
    org_ids: frozenset[UUID] | None

    @property
    def is_operator(self) -> bool:
        return self.org_ids is None

    def may_act_for(self, org_id: UUID) -> bool:
        return self.org_ids is None or org_id in self.org_ids


OPERATOR = Caller("operator", None)


def app_user(claims: Mapping[str, Any]) -> Caller:
    """The caller a verified app JWT names: its `sub` and the organisations its claims grant."""
    subject = claims.get("sub")
    return Caller(subject if isinstance(subject, str) and subject else "unknown user", claimed_org_ids(claims))
