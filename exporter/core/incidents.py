"""Vendor-wide incidents, pure: when many organisations fail on one integration type at once, the vendor is
down for everyone; which types are in an incident, since when, and which few integrations (canaries) keep
being checked while it lasts."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from exporter.core.model import HealthResult, HealthStatus, IntegrationResult, Reason

# What a vendor's outage looks like from any organisation: it cannot be reached or answers with a server
# error. Credentials, configuration, the egress policy, throttling and 4xx are one organisation's own.
INFRA_REASONS = frozenset({Reason.TIMEOUT, Reason.DNS, Reason.CONNECT, Reason.TLS, Reason.HTTP_5XX})
DEFAULT_MIN_ORGS = 5
DEFAULT_RATIO = 0.5
DEFAULT_CANARIES = 3
# While an incident lasts, the whole type is checked and judged again this often (the canaries in between):
# an incident held open by a few integrations that fail on their own ends within the hour.
FULL_CHECK_EVERY_S = 3600


@dataclass(frozen=True, slots=True)
class IncidentRules:
    """EXPORTER_VENDOR_INCIDENT_MIN_ORGS, _RATIO and _CANARIES."""

    min_orgs: int = DEFAULT_MIN_ORGS
    ratio: float = DEFAULT_RATIO
    canaries: int = DEFAULT_CANARIES
    # The types that are one vendor (their adapter reaches a fixed set of the vendor's hosts); None: every type.
    # A type whose URL each organisation chooses (plain `http`) has no shared vendor: five tenants pointing it
    # at dead hosts would otherwise declare an "incident" and pause and silence everyone else's checks of it.
    types: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.min_orgs < 1:
            raise ValueError("min_orgs must be >= 1")
        if not 0 < self.ratio <= 1:
            raise ValueError("ratio must be > 0 and <= 1")
        if self.canaries < 1:
            raise ValueError("canaries must be >= 1")


@dataclass(frozen=True, slots=True)
class Tally:
    """One type's checks in one slot: how many integrations were checked and how many failed as infrastructure."""

    checked: int = 0
    failing: int = 0

    @property
    def ratio(self) -> float:
        return self.failing / self.checked if self.checked else 0.0


def is_infra_failure(result: HealthResult) -> bool:
    """Unreachable for a reason every organisation would share (network, TLS, timeout, 5xx)."""
    return result.status == HealthStatus.UNREACHABLE and result.reason in INFRA_REASONS


def tally(results: Iterable[IntegrationResult], types: Collection[str] = ()) -> dict[str, Tally]:
    """Count a slot's results per type (one per organisation and type); `types` get an entry even when empty."""
    checked: dict[str, set[UUID]] = {t: set() for t in types}
    failing: dict[str, set[UUID]] = {t: set() for t in types}
    for r in results:
        checked.setdefault(r.integration_type, set()).add(r.org_id)
        if is_infra_failure(r.result):
            failing.setdefault(r.integration_type, set()).add(r.org_id)
    return {t: Tally(len(orgs), len(failing.get(t, ()))) for t, orgs in checked.items()}


def decide(ongoing: Mapping[str, datetime], tallies: Mapping[str, Tally], slot: datetime, rules: IncidentRules,
           canaries_only: Collection[str] = ()) -> dict[str, datetime]:
    """The types in an incident after `slot`, each with the slot it began (stable while it lasts).

    A type fully checked is in an incident when at least `min_orgs` organisations and `ratio` of those
    checked failed as infrastructure. A type in `canaries_only` (an ongoing incident, only its canaries
    checked) goes on while `ratio` of its canaries still fail, or none was due; otherwise the caller checks
    the whole type and decides again. A type absent from `tallies` is no longer configured: its incident ends.
    """
    out: dict[str, datetime] = {}
    for kind, t in tallies.items():
        if rules.types is not None and kind not in rules.types:
            continue  # no shared vendor: never an incident (one that was restored for it ends here)
        since = ongoing.get(kind)
        if since is not None and kind in canaries_only:
            if t.checked == 0 or t.ratio >= rules.ratio:
                out[kind] = since
        elif t.failing >= rules.min_orgs and t.ratio >= rules.ratio:
            out[kind] = since or slot
    return out


def full_check_due(since: datetime, slot: datetime) -> bool:
    """Whether an incident that began at `since` is judged on its whole fleet in `slot` (every full hour of it)."""
    elapsed = int((slot - since).total_seconds())
    return elapsed > 0 and elapsed % FULL_CHECK_EVERY_S == 0


def _rank(org_id: UUID, integration_type: str, slot: datetime) -> bytes:
    return hashlib.sha256(f"{org_id}/{integration_type}/{slot.isoformat()}".encode()).digest()


def canaries(candidates: Iterable[tuple[UUID, str]], slot: datetime, n: int,
             last: Mapping[tuple[UUID, str], HealthResult]) -> set[tuple[UUID, str]]:
    """The `n` integrations of one type to check in `slot` while its incident lasts.

    The order is a hash of the key and the slot, so the choice is deterministic, a disabled canary is simply
    replaced, and the quota the canaries spend is spread over the organisations instead of charged to the same
    three. Only integrations failing on their own account (credentials, configuration: they would look like a
    recovery) go last. Failing as infrastructure earns no priority: an organisation that points its own
    integration at a dead host must not be chosen every slot and so hold the incident — and the inhibition of
    everyone else's alerts — open (one tenant must never silence another).
    """
    def own_failure(k: tuple[UUID, str]) -> bool:
        r = last.get(k)
        return r is not None and r.status != HealthStatus.HEALTHY and not is_infra_failure(r)

    keys = sorted(candidates, key=lambda k: (own_failure(k), _rank(*k, slot)))
    return set(keys[:n])


def failing_ratio(results: Iterable[IntegrationResult], integration_type: str) -> float:
    """The share of a type's integrations whose latest result is an infrastructure failure (0 when none)."""
    mine = [r for r in results if r.integration_type == integration_type]
    return sum(is_infra_failure(r.result) for r in mine) / len(mine) if mine else 0.0


def restored(results: Iterable[IntegrationResult]) -> dict[str, datetime]:
    """Incidents that were going on when the process stopped, from the flags on the stored results: a restart
    neither forgets an outage (and checks everyone) nor moves its start."""
    out: dict[str, datetime] = {}
    for r in results:
        since = r.result.vendor_incident_since
        if since is not None and (r.integration_type not in out or since > out[r.integration_type]):
            out[r.integration_type] = since
    return out
