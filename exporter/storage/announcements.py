"""The events a persist announces besides status changes: a vendor-wide incident reaching or leaving an
organisation, a maintenance window starting or ending for it, a credential nearing its expiry.

Each is a move of a flag on a status row, so the persist's transaction reads the rows' flags before it
writes (`before`) and again after (`enqueue_news`), and core/events decides which moves are news. Only the
rows of organisations with an enabled subscription to one of these kinds are read (`watched`, one probe of
the subscriptions by the batch's organisations): for everyone else the outbox would take nothing, and a
fleet without subscribers pays one index probe per batch and reads no flags.
Event ids are uuid5 of what happened (core/events.make_event), so a retried batch or a second replica
writing the same move adds no row to the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

import asyncpg

from exporter.core import events
from exporter.core.events import EventType, Flags
from exporter.core.maintenance import Window
from exporter.storage.webhooks import enqueue

KINDS = [EventType.VENDOR_INCIDENT.value, EventType.MAINTENANCE_WINDOW.value, EventType.CREDENTIAL_EXPIRING.value]

Key = tuple[UUID, str]

# Of these organisations, those with an enabled subscription to one of the kinds.
SELECT_SUBSCRIBED = """
SELECT DISTINCT org_id FROM public.webhook_subscription
WHERE org_id = ANY ($1::uuid[]) AND enabled AND events && $2::text[]"""

SELECT_FLAGS = """
SELECT s.org_id, s.integration_type, s.checked_at, s.maintenance, s.vendor_incident_since, s.credential_expires_at
FROM public.integration_health_status s
JOIN unnest($1::uuid[], $2::text[]) AS k(org_id, integration_type)
  ON s.org_id = k.org_id AND s.integration_type = k.integration_type"""

# The windows that may have started or ended for these organisations between the two readings: their own
# and the global ones, ended or not (a window deleted while in force is gone: `window_deleted` ended it).
SELECT_WINDOWS = """
SELECT id, org_id, integration_type, starts_at, ends_at, reason, created_by, created_at
FROM public.maintenance_window
WHERE (org_id IS NULL OR org_id = ANY ($1::uuid[])) AND ends_at > $2 AND starts_at <= $3"""


# The organisations a window in force has flagged (their rows say so) that subscribe to its announcements.
SELECT_FLAGGED_ORGS = """
SELECT DISTINCT s.org_id FROM public.integration_health_status s
WHERE s.maintenance AND ($1::uuid IS NULL OR s.org_id = $1) AND ($2::text IS NULL OR s.integration_type = $2)
  AND EXISTS (SELECT 1 FROM public.webhook_subscription w
              WHERE w.org_id = s.org_id AND w.enabled AND $3 = ANY (w.events))"""


async def watched(conn: asyncpg.Connection, org_ids: Sequence[UUID], integration_types: Sequence[str]
                  ) -> tuple[list[UUID], list[str]]:
    """The keys among these whose organisation subscribes to one of the kinds: the ones whose flags are read."""
    subscribed = {r["org_id"] for r in await conn.fetch(SELECT_SUBSCRIBED, list(set(org_ids)), KINDS)}
    keys = [(o, k) for o, k in zip(org_ids, integration_types, strict=True) if o in subscribed]
    return [o for o, _ in keys], [k for _, k in keys]


async def flags(conn: asyncpg.Connection, org_ids: Sequence[UUID], integration_types: Sequence[str]
                ) -> dict[Key, Flags]:
    """The flags of these status rows (of `watched` keys), by (org, type); none read for no keys."""
    if not org_ids:
        return {}
    rows = await conn.fetch(SELECT_FLAGS, list(org_ids), list(integration_types))
    return {(r["org_id"], r["integration_type"]): Flags(r["checked_at"], r["maintenance"], r["vendor_incident_since"],
                                                        r["credential_expires_at"]) for r in rows}


async def _windows(conn: asyncpg.Connection, before: Mapping[Key, Flags], after: Mapping[Key, Flags]
                   ) -> list[Window]:
    """The maintenance windows the moves of flagged rows are judged against (none read when no row is flagged)."""
    flagged = [k for k, f in after.items() if f.maintenance or (k in before and before[k].maintenance)]
    if not flagged:
        return []
    times = [f.checked_at for k in flagged for f in (before.get(k), after[k]) if f is not None]
    rows = await conn.fetch(SELECT_WINDOWS, list({k[0] for k in flagged}), min(times), max(times))
    return [Window(**dict(r)) for r in rows]


async def enqueue_news(conn: asyncpg.Connection, before: Mapping[Key, Flags], org_ids: Sequence[UUID],
                       integration_types: Sequence[str]) -> list[events.Event]:
    """After a batch is stored, in its transaction: read the flags of its `watched` keys again, enqueue the events
    of their moves since `before` (one per id: an org-wide window moves several rows of one organisation).
    Returns them."""
    after = await flags(conn, org_ids, integration_types)
    if not after:
        return []
    windows = await _windows(conn, before, after)
    news = {e.id: e for (org_id, kind), now in after.items()
            for e in events.row_news(org_id, kind, before.get((org_id, kind)), now, windows)}
    await enqueue(conn, list(news.values()))
    return list(news.values())


async def window_deleted(conn: asyncpg.Connection, window: Window) -> list[events.Event]:
    """In the deleting transaction: announce the end of a window deleted while in force (now, the database's
    clock) to the organisations it had flagged. Returns the events."""
    now = await conn.fetchval("SELECT now()")
    if not window.active(now):
        return []
    orgs = await conn.fetch(SELECT_FLAGGED_ORGS, window.org_id, window.integration_type,
                            EventType.MAINTENANCE_WINDOW.value)
    news = events.window_cut_short([r["org_id"] for r in orgs], window, now)
    await enqueue(conn, news)
    return news
