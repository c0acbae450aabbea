"""The vendor-wide incident decision, pure: thresholds at their edges, which failures count, hysteresis through
the canaries, a stable start, and which integrations are the canaries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from exporter.adapters import ADAPTERS
from exporter.core import incidents
from exporter.core.incidents import IncidentRules, Tally
from exporter.core.model import AUTH_REASONS, HealthStatus, IntegrationResult, Reason, make_result
from exporter.services import vendor_types

SLOT = datetime(2026, 11, 23, 10, 15, tzinfo=UTC)
RULES = IncidentRules(min_orgs=5, ratio=0.5, canaries=3)


def org(n: int) -> UUID:
    return UUID(int=n + 1)


def result(n: int, reason: Reason | None, kind: str = "xledger") -> IntegrationResult:
    status = (HealthStatus.HEALTHY if reason is None else
              HealthStatus.DEGRADED if reason in {*AUTH_REASONS, Reason.RATE_LIMITED, Reason.QUOTA, Reason.HTTP_4XX}
              else HealthStatus.UNREACHABLE)
    return IntegrationResult(org(n), kind, make_result(status, 5, SLOT, None if reason is None else "x", reason))


def fleet(failing: int, healthy: int, reason: Reason = Reason.HTTP_5XX) -> list[IntegrationResult]:
    return [result(n, reason) for n in range(failing)] + [result(failing + n, None) for n in range(healthy)]


@pytest.mark.parametrize(("failing", "healthy", "declared"), [
    (5, 5, True),  # both thresholds exactly met
    (4, 0, False),  # every one fails, but only four organisations
    (5, 6, False),  # five organisations, but under half of those checked
    (12, 0, True),
])
def test_an_incident_needs_enough_organisations_and_enough_of_the_type(failing, healthy, declared) -> None:
    decided = incidents.decide({}, incidents.tally(fleet(failing, healthy)), SLOT, RULES)
    assert decided == ({"xledger": SLOT} if declared else {})


@pytest.mark.parametrize("reason", [Reason.TIMEOUT, Reason.DNS, Reason.CONNECT, Reason.TLS, Reason.HTTP_5XX])
def test_network_tls_timeout_and_server_errors_count(reason) -> None:
    assert incidents.decide({}, incidents.tally(fleet(6, 0, reason)), SLOT, RULES) == {"xledger": SLOT}


@pytest.mark.parametrize("reason", [*sorted(AUTH_REASONS), Reason.CREDENTIAL_UNAVAILABLE, Reason.INVALID_CONFIG,
                                    Reason.BLOCKED, Reason.RATE_LIMITED, Reason.QUOTA, Reason.HTTP_4XX,
                                    Reason.BAD_RESPONSE, Reason.SLOW])
def test_failures_of_one_organisations_own_never_make_an_incident(reason) -> None:
    assert incidents.decide({}, incidents.tally(fleet(12, 0, reason)), SLOT, RULES) == {}


def test_a_type_whose_url_each_tenant_chooses_never_has_an_incident_so_tenants_cannot_silence_each_other() -> None:
    """Plain `http` reaches whatever host each organisation configured: twelve tenants pointing it at dead
    hosts are twelve outages of their own, not a vendor's; an incident restored for such a type ends."""
    rules = IncidentRules(min_orgs=5, ratio=0.5, canaries=3, types=frozenset({"xledger"}))
    attack = [result(n, Reason.CONNECT, "http") for n in range(12)]
    assert incidents.decide({}, incidents.tally(attack), SLOT, rules) == {}
    assert incidents.decide({"http": SLOT}, incidents.tally(attack), SLOT, rules, canaries_only={"http"}) == {}
    assert incidents.decide({}, incidents.tally(fleet(6, 0)), SLOT, rules) == {"xledger": SLOT}  # a vendor's still
    assert incidents.decide({}, incidents.tally(attack), SLOT, RULES) == {"http": SLOT}  # (every type by default)


def test_the_service_judges_only_types_with_a_vendors_own_hosts() -> None:
    assert vendor_types(ADAPTERS) == {"dynamics365", "fiken", "tripletex", "xledger"}


def test_types_are_judged_apart() -> None:
    results = fleet(6, 0) + [result(100 + n, None, "fiken") for n in range(6)]
    assert incidents.decide({}, incidents.tally(results), SLOT, RULES) == {"xledger": SLOT}


def test_an_ongoing_incident_keeps_its_start_while_the_canaries_fail() -> None:
    later = SLOT + timedelta(minutes=45)
    canaries = incidents.tally(fleet(2, 1))  # two of three: still at least half
    assert incidents.decide({"xledger": SLOT}, canaries, later, RULES, canaries_only={"xledger"}) == {"xledger": SLOT}


def test_canaries_that_recover_end_the_incident_even_below_the_organisation_threshold() -> None:
    later = SLOT + timedelta(minutes=45)
    canaries = incidents.tally(fleet(1, 2))  # one of three fails: a third, under half
    assert incidents.decide({"xledger": SLOT}, canaries, later, RULES, canaries_only={"xledger"}) == {}


def test_an_incident_goes_on_when_no_canary_was_due_in_the_slot() -> None:
    quiet = {"xledger": Tally()}  # hourly type, a quarter-hour slot
    assert incidents.decide({"xledger": SLOT}, quiet, SLOT + timedelta(minutes=15), RULES,
                            canaries_only={"xledger"}) == {"xledger": SLOT}


def test_a_full_check_after_a_false_recovery_keeps_the_first_start() -> None:
    later = SLOT + timedelta(hours=1)
    assert incidents.decide({"xledger": SLOT}, incidents.tally(fleet(10, 2)), later, RULES) == {"xledger": SLOT}


def test_an_incident_of_a_type_no_longer_configured_ends() -> None:
    assert incidents.decide({"xledger": SLOT}, {}, SLOT, RULES, canaries_only={"xledger"}) == {}


def test_tally_counts_organisations_once_and_lists_types_asked_for() -> None:
    tallies = incidents.tally(fleet(2, 1) + [result(0, Reason.TIMEOUT)], types={"fiken"})
    assert tallies == {"xledger": Tally(3, 2), "fiken": Tally(0, 0)}
    assert tallies["fiken"].ratio == 0.0


def test_canaries_leave_own_failures_last_and_are_deterministic() -> None:
    results = fleet(4, 0) + [result(10, Reason.AUTH)] + [result(11, None)]
    last = {r.org_id_key(): r.result for r in results}
    keys = list(last)
    chosen = incidents.canaries(keys, SLOT, 3, last)
    assert len(chosen) == 3 and (org(10), "xledger") not in chosen  # a credentials failure would look like recovery
    assert all(incidents.canaries(keys, SLOT + timedelta(minutes=15 * n), 5, last) == set(keys) - {(org(10), "xledger")}
               for n in range(8))
    assert chosen == incidents.canaries(list(reversed(keys)), SLOT, 3, last)
    picks = {frozenset(incidents.canaries(keys, SLOT + timedelta(minutes=15 * n), 3, last)) for n in range(8)}
    assert len(picks) > 1, "the canaries rotate from slot to slot, so no organisation pays for all of them"


def test_a_disabled_canary_is_replaced() -> None:
    results = fleet(6, 0)
    last = {r.org_id_key(): r.result for r in results}
    chosen = incidents.canaries(list(last), SLOT, 3, last)
    gone = next(iter(chosen))
    again = incidents.canaries([k for k in last if k != gone], SLOT, 3, last)
    assert len(again) == 3 and gone not in again and len(again & chosen) == 2


def test_failing_ratio_and_restored_incidents() -> None:
    results = fleet(3, 1)
    assert incidents.failing_ratio(results, "xledger") == 0.75
    assert incidents.failing_ratio(results, "fiken") == 0.0
    flagged = [IntegrationResult(r.org_id, r.integration_type,
                                 replace(r.result, vendor_incident_since=SLOT)) for r in results[:2]]
    assert incidents.restored(flagged + results[2:]) == {"xledger": SLOT}


@pytest.mark.parametrize(("field", "value"), [("min_orgs", 0), ("ratio", 0), ("ratio", 1.5), ("canaries", 0)])
def test_rules_refuse_values_that_would_declare_always_or_watch_nothing(field, value) -> None:
    with pytest.raises(ValueError):
        IncidentRules(**{field: value})


def test_two_organisations_failing_on_their_own_cannot_hold_an_incident_open() -> None:
    """The attack: two tenants point their own integration at a dead host (it fails as infrastructure) and wait
    for a real outage; after the vendor recovers they must not be the canaries slot after slot, holding the
    incident, and the inhibition of everyone else's alerts, open. And whatever the canaries say, the whole
    fleet is judged again every hour."""
    attackers = fleet(2, 0)
    recovered = [result(n, None) for n in range(2, 52)]  # 50 organisations the vendor answers again
    last = {r.org_id_key(): r.result for r in attackers + recovered}
    rules = IncidentRules()
    held = 0
    for n in range(1, 40):
        slot = SLOT + timedelta(minutes=15 * n)
        chosen = incidents.canaries(list(last), slot, rules.canaries, last)
        canary_results = [r for r in attackers + recovered if r.org_id_key() in chosen]
        if incidents.decide({"xledger": SLOT}, incidents.tally(canary_results), slot, rules,
                            canaries_only={"xledger"}):
            held += 1
    assert held <= 2, f"the attackers' canaries held the incident in {held} of 39 slots"
    # the hourly full judgement: 2 of 52 failing is no incident, whoever the canaries were
    assert incidents.decide({"xledger": SLOT}, incidents.tally(attackers + recovered), SLOT + timedelta(hours=1),
                            rules) == {}
    assert [n for n in range(1, 9) if incidents.full_check_due(SLOT, SLOT + timedelta(minutes=15 * n))] == [4, 8]
    assert not incidents.full_check_due(SLOT, SLOT)
