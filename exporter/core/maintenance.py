"""Maintenance windows, pure: which integrations a window covers at an instant, what a check during one
changes in the scheduler's state, and which new windows make no sense. No I/O.

A window covers an integration while `starts_at <= t < ends_at`, for its organisation (or every one, when
org_id is None) and its type (or every type). Checks go on during a window, so a recovery is seen at once;
their results are flagged, and a failure in a window neither counts towards the two-in-a-row that pages
nor backs the next check off: when the window ends, an integration still failing needs two failed checks
outside it, the usual rule, before anyone is paged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from uuid import UUID

from exporter.core import policy
from exporter.core.model import CheckState, HealthResult

MAX_DURATION = timedelta(days=7)  # longer only with force: a forgotten window silences everything it covers
REASON_MAX_CHARS = 500
Key = tuple[UUID, str]


@dataclass(frozen=True, slots=True)
class Window:
    """One row of maintenance_window; None for org_id or integration_type means all of them."""

    id: UUID
    org_id: UUID | None
    integration_type: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str = ""
    created_by: str = "operator"
    created_at: datetime | None = None

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    def applies_to(self, org_id: UUID, integration_type: str) -> bool:
        """Whether the window's scope includes the integration, whatever the time."""
        return ((self.org_id is None or self.org_id == org_id)
                and (self.integration_type is None or self.integration_type == integration_type))

    def covers(self, org_id: UUID, integration_type: str, at: datetime) -> bool:
        return self.active(at) and self.applies_to(org_id, integration_type)


def active(windows: Iterable[Window], at: datetime) -> list[Window]:
    """The windows in force at `at` (few, whatever the fleet's size: the renderer keys its cache on them)."""
    return [w for w in windows if w.active(at)]


def covering(windows: Iterable[Window], org_id: UUID, integration_type: str, at: datetime) -> Window | None:
    """The first window covering the integration at `at`, or None."""
    return next((w for w in windows if w.covers(org_id, integration_type, at)), None)


def covered(windows: Sequence[Window], keys: Iterable[Key], at: datetime) -> set[Key]:
    """The integrations among `keys` that a window covers at `at`: one set lookup per key, whatever the
    number of windows (every scrape asks this of the whole fleet)."""
    now = active(windows, at)
    if any(w.org_id is None and w.integration_type is None for w in now):
        return set(keys)
    orgs = {w.org_id for w in now if w.integration_type is None}
    types = {w.integration_type for w in now if w.org_id is None}
    pairs = {(w.org_id, w.integration_type) for w in now}
    return {k for k in keys if k[0] in orgs or k[1] in types or k in pairs} if now else set()


def after_check(previous: CheckState | None, result: HealthResult, slot: datetime, interval_s: int) -> CheckState:
    """The state after a check inside a window: a success resets as ever; a failure is not counted and defers
    nothing (due again in its next slot), though a vendor's Retry-After is still honoured."""
    if not policy.counts_as_failure(result):
        return policy.after_check(previous, result, slot, interval_s)
    next_at = policy.next_slot(slot, interval_s)
    if result.retry_after_s:
        honoured = slot + timedelta(seconds=min(result.retry_after_s, policy.MAX_RETRY_AFTER_S))
        if honoured > next_at:
            next_at += timedelta(seconds=interval_s) * math.ceil((honoured - next_at) / timedelta(seconds=interval_s))
    return replace(previous or CheckState(), next_check_at=next_at)


def refusal(starts_at: datetime, ends_at: datetime, now: datetime, *, force: bool = False) -> str | None:
    """Why a new window makes no sense, or None: it must end after it starts and after now, and last at most
    MAX_DURATION unless forced."""
    if ends_at <= starts_at:
        return "ends_at must be after starts_at"
    if ends_at <= now:
        return f"the window has already ended (ends_at {ends_at.isoformat()} is before now, {now.isoformat()})"
    if ends_at - starts_at > MAX_DURATION and not force:
        return (f"a window may last at most {MAX_DURATION.days} days ({ends_at - starts_at} asked); "
                "send force=true to mean it")
    return None


def same_scope_overlap(new: Window, existing: Iterable[Window]) -> Window | None:
    """An existing window with exactly the new one's scope whose time overlaps it: a second window would only
    duplicate (or contradict) the first, so it is refused unless forced."""
    return next((w for w in existing if w.org_id == new.org_id and w.integration_type == new.integration_type
                 and w.starts_at < new.ends_at and new.starts_at < w.ends_at and w.id != new.id), None)


def after_passive(previous: CheckState | None, result: HealthResult, slot: datetime, interval_s: int) -> CheckState:
    """As policy.after_passive, but a failed sync inside a window is not counted either."""
    state = policy.after_passive(previous, result, slot, interval_s)
    if policy.counts_as_failure(result):
        return replace(state, consecutive_failures=(previous or CheckState()).consecutive_failures)
    return state
