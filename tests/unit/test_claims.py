"""Which organisations JWT claims grant, and who may act for which organisation (exporter/core/claims.py)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from exporter.core.claims import OPERATOR, app_user, claimed_org_ids
from tests.support.claims import CLAIM_SETS, A, B


@pytest.mark.parametrize(("claims", "granted"), [(c, g) for _, c, g in CLAIM_SETS], ids=[n for n, _, _ in CLAIM_SETS])
def test_claims_grant_the_organisations_rls_grants(claims: dict[str, Any], granted: frozenset[UUID]) -> None:
    assert claimed_org_ids(claims) == granted


def test_a_float_is_never_an_org_id_here_though_the_sql_function_prints_its_digits() -> None:
    assert claimed_org_ids({"org_id": 1e31, "app_metadata": {"org_id": 1.5, "org_ids": [1e31]}}) == frozenset()


def test_the_operator_may_act_for_every_organisation() -> None:
    assert OPERATOR.is_operator and OPERATOR.may_act_for(A) and OPERATOR.may_act_for(B)


def test_an_app_user_may_act_only_for_the_organisations_its_claims_name() -> None:
    user = app_user({"sub": "user-7", "org_id": str(A)})
    assert (user.subject, user.is_operator, user.may_act_for(A), user.may_act_for(B)) == ("user-7", False, True, False)


@pytest.mark.parametrize("sub", [None, "", 42])
def test_an_app_user_without_a_usable_sub_is_still_scoped_by_its_claims(sub: object) -> None:
    user = app_user({"sub": sub, "app_metadata": {"org_ids": [str(B)]}})
    assert (user.subject, user.org_ids) == ("unknown user", frozenset({B}))
