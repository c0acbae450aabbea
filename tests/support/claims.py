"""JWT claim sets and the organisations they grant: one table for the Python function (tests/unit/test_claims.py)
and the SQL function row-level security calls (tests/db/test_claims_sql.py), so the two cannot drift apart."""

from __future__ import annotations

from typing import Any
from uuid import UUID

A = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
B = UUID("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")
NIL = UUID(int=0)
DIGITS = 12345678123412341234123456789012  # a JSON number whose digits read as 32 hex digits

# (name, claims, organisations granted)
CLAIM_SETS: list[tuple[str, dict[str, Any], frozenset[UUID]]] = [
    ("no claims", {}, frozenset()),
    ("a supabase session without org claims", {"sub": "u1", "role": "authenticated", "aud": "authenticated",
                                               "app_metadata": {"provider": "email"}}, frozenset()),
    ("top-level org_id", {"org_id": str(A)}, frozenset({A})),
    ("app_metadata.org_id", {"app_metadata": {"org_id": str(B)}}, frozenset({B})),
    ("app_metadata.org_ids", {"app_metadata": {"org_ids": [str(A), str(B)]}}, frozenset({A, B})),
    ("all three places, repeated", {"org_id": str(A), "app_metadata": {"org_id": str(A), "org_ids": [str(B), str(A)]}},
     frozenset({A, B})),
    ("user_metadata is the user's to edit", {"user_metadata": {"org_id": str(A), "org_ids": [str(B)]}}, frozenset()),
    ("user_metadata beside a real claim", {"app_metadata": {"org_id": str(B)}, "user_metadata": {"org_id": str(A)}},
     frozenset({B})),
    ("a nested org_id elsewhere", {"claims": {"org_id": str(A)}, "app_metadata": {"org": {"org_id": str(A)}}},
     frozenset()),
    ("not a uuid", {"org_id": "garbage"}, frozenset()),
    ("empty string", {"org_id": ""}, frozenset()),
    ("null", {"org_id": None, "app_metadata": {"org_id": None, "org_ids": None}}, frozenset()),
    ("a small number", {"org_id": 42}, frozenset()),
    ("a boolean", {"org_id": True, "app_metadata": {"org_ids": [True, False]}}, frozenset()),
    ("an object", {"org_id": {"id": str(A)}}, frozenset()),
    ("a top-level list is not read", {"org_id": [str(A)]}, frozenset()),
    ("app_metadata a string", {"app_metadata": str(A)}, frozenset()),
    ("app_metadata a list", {"app_metadata": [{"org_id": str(A)}]}, frozenset()),
    ("org_ids a string, not a list", {"app_metadata": {"org_ids": str(A)}}, frozenset()),
    ("org_ids mixed", {"app_metadata": {"org_ids": [str(A), "nope", 7, None, [str(B)], {"id": str(B)}]}},
     frozenset({A})),
    ("upper case", {"org_id": str(A).upper()}, frozenset({A})),
    ("no hyphens", {"org_id": A.hex}, frozenset({A})),
    ("one hyphen left out", {"org_id": "aaaaaaaa-aaaa4aaa-8aaa-aaaaaaaaaaaa"}, frozenset({A})),
    ("hyphens in the wrong places", {"org_id": "aaaa-aaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"}, frozenset()),
    ("braces (Python's UUID takes them, the SQL function does not)", {"org_id": "{" + str(A) + "}"}, frozenset()),
    ("urn prefix", {"org_id": f"urn:uuid:{A}"}, frozenset()),
    ("leading space", {"org_id": f" {A}"}, frozenset()),
    ("trailing newline", {"org_id": f"{A}\n"}, frozenset()),
    ("one digit too many", {"org_id": f"{A}a"}, frozenset()),
    ("a non-ASCII digit", {"org_id": str(A).replace("a", "\u0663", 1)}, frozenset()),
    ("a fullwidth letter", {"org_id": str(A).replace("a", "\uff41", 1)}, frozenset()),
    ("the nil uuid", {"org_id": str(NIL)}, frozenset({NIL})),
    ("32 decimal digits as a JSON number", {"org_id": DIGITS},
     frozenset({UUID("12345678-1234-1234-1234-123456789012")})),
    ("the role claim grants nothing", {"role": "service_role"}, frozenset()),
]
