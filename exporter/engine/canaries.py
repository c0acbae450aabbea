"""Vendor-wide incidents in the cycle: which integrations to check while a vendor is down for everyone (its
canaries), which to leave standing, and what each result says about the incident (core/incidents decides)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from exporter.core import incidents, policy
from exporter.core.incidents import IncidentRules
from exporter.core.model import HealthResult, Integration, IntegrationResult
from exporter.engine.instruments import Instruments
from exporter.engine.snapshot import Key, key_of

log = logging.getLogger(__name__)


class VendorWatch:
    """The incidents going on (type → the slot each began) and the choices they imply for a cycle.

    Each replica decides on what it checks (its shards): a replica that holds fewer than `min_orgs`
    organisations of a type never declares an incident for it.
    """

    def __init__(self, rules: IncidentRules | None, instruments: Instruments) -> None:
        self.rules, self.instruments = rules, instruments  # rules None: never declare one (bench's baseline)
        self.ongoing: dict[str, datetime] = {}

    def split(self, active: Sequence[Integration], todo: Sequence[Integration], slot: datetime,
              last: dict[Key, HealthResult], interval_of: Callable[[Integration], int]
              ) -> tuple[list[Integration], list[Integration]]:
        """(to check now, to leave standing): a type in an incident is checked through its canaries only,
        every slot on their interval whatever their backoff; one never checked before is checked as due."""
        if not self.ongoing or self.rules is None:
            return list(todo), []
        checking = [i for i in todo if i.integration_type not in self.ongoing or key_of(i) not in last]
        held = []
        for kind in self.ongoing:
            known = [i for i in active if i.integration_type == kind and key_of(i) in last]
            chosen = incidents.canaries([key_of(i) for i in known], slot, self.rules.canaries, last)
            for i in known:
                on_interval = int(slot.timestamp()) % interval_of(i) == 0
                (checking if key_of(i) in chosen and on_interval else held).append(i)
        return checking, held

    def decide(self, results: Iterable[IntegrationResult], present: Collection[str], slot: datetime,
               full: Collection[str] = ()) -> set[str]:
        """Update the incidents from a slot's results; the types to check in full now: those whose canaries
        recovered, and those whose incident has lasted another full hour (incidents.full_check_due).

        `full`: types whose every integration was checked in this slot after their canaries recovered;
        they are judged on their whole fleet again (an incident that goes on keeps its start)."""
        if self.rules is None:
            return set()
        # planned maintenance is no outage: a window covering many organisations must not page as one
        checked = [r for r in results if not policy.not_checked(r.result) and not r.maintenance]
        if full:
            tallies = incidents.tally([r for r in checked if r.integration_type in full], full)
            ongoing = {k: v for k, v in self.ongoing.items() if k in full}
            kept = incidents.decide(ongoing, tallies, slot, self.rules)
            self._change({**{k: v for k, v in self.ongoing.items() if k not in full}, **kept}, slot)
            return set()
        decided = incidents.decide(self.ongoing, incidents.tally(checked, present), slot, self.rules,
                                   canaries_only=self.ongoing.keys())
        recovered = {k for k in self.ongoing if k in present and k not in decided}
        recheck = {k for k in decided if k in present and incidents.full_check_due(decided[k], slot)}
        self._change({**decided, **{k: self.ongoing[k] for k in recovered}}, slot)
        return recovered | recheck  # checked in full now and judged again (a recheck keeps the start)

    def _change(self, now: dict[str, datetime], slot: datetime) -> None:
        for kind in now.keys() - self.ongoing.keys():
            log.warning("vendor-wide incident: %s fails for many organisations at once; checking %d canaries "
                        "until it recovers", kind, self.rules.canaries if self.rules else 0,
                        extra={"integration_type": kind, "slot": slot.isoformat()})
        for kind in self.ongoing.keys() - now.keys():
            log.warning("vendor-wide incident over: %s recovered (it began %s)", kind,
                        self.ongoing[kind].isoformat(), extra={"integration_type": kind, "slot": slot.isoformat()})
        self.ongoing = now

    def awaits_decision(self, r: IntegrationResult) -> bool:
        """Whether a result must wait for the slot's decision to be shown: an infrastructure failure may be
        part of an outage the slot has yet to declare (never for a type the rules leave out, or without rules)."""
        rules = self.rules
        return (rules is not None and (rules.types is None or r.integration_type in rules.types)
                and incidents.is_infra_failure(r.result))

    def flag(self, results: Sequence[IntegrationResult]) -> list[IntegrationResult]:
        """Mark the infrastructure failures of a type in an incident with its start; the rest are their own."""
        out = []
        for r in results:
            since = self.ongoing.get(r.integration_type)
            if since is not None and incidents.is_infra_failure(r.result):
                r = replace(r, result=replace(r.result, vendor_incident_since=since))
            out.append(r)
        return out

    def standing(self, held: Sequence[Integration], last: dict[Key, IntegrationResult], slot: datetime,
                 interval_of: Callable[[Integration], int]) -> list[IntegrationResult]:
        """The held integrations' last results, flagged with the incident, next due no sooner than their next
        slot (so the staleness alert does not read them as forgotten): those that were due in this slot, and
        any not flagged yet (an hourly type's others, in a quarter-hour slot, just wait as they would)."""
        out = []
        for i in held:
            r, since = last[key_of(i)], self.ongoing[i.integration_type]
            if int(slot.timestamp()) % interval_of(i) and r.result.vendor_incident_since == since:
                continue
            nxt = policy.next_slot(slot, interval_of(i))
            due = max(r.state.next_check_at or nxt, nxt)
            out.append(replace(r, result=replace(r.result, vendor_incident_since=since),
                               state=replace(r.state, next_check_at=due)))
        return out

    def export(self, results: Iterable[IntegrationResult]) -> None:
        """Set the incident and failing-ratio gauges of every known type from the latest results."""
        by_type: dict[str, list[IntegrationResult]] = {}
        for r in results:  # one pass over the fleet, not one per type
            if not r.maintenance:
                by_type.setdefault(r.integration_type, []).append(r)
        self.export_incidents()
        for kind in self.instruments.known_types:
            self.instruments.vendor_failing_ratio.labels(kind).set(
                incidents.failing_ratio(by_type.get(kind, []), kind))

    def export_incidents(self) -> None:
        """Set the incident gauges, which inhibit the per-organisation alerts of a type in an incident."""
        for kind in self.instruments.known_types:
            self.instruments.vendor_incident.labels(kind).set(1 if kind in self.ongoing else 0)

    def restore(self, results: Iterable[IntegrationResult]) -> None:
        """Incidents going on when the process stopped, of the types the rules still judge (an http incident
        stored before http was left out must not page again at start)."""
        if self.rules is not None:
            types = self.rules.types
            self.ongoing = {kind: since for kind, since in incidents.restored(results).items()
                            if types is None or kind in types}

