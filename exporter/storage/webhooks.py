"""Webhook rows: subscriptions and their secrets, and the delivery outbox (enqueue, claim, settle).

Events enter the outbox inside the transaction that records what they announce (`enqueue`,
`enqueue_status_changes`), so a status change and its notification are written together or not at all.
Replicas share the delivery work with `FOR UPDATE SKIP LOCKED`; a claimed row's next attempt is pushed
past the request's deadline first, so a replica that dies mid-delivery leaves it to be retried, never lost.
Signing secrets are sealed here with the operator's keyring (core/sealing), before they reach a row, and
opened here when a delivery is claimed: no other code sees a sealed or an unsealed secret column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from exporter.core import events
from exporter.core.events import Event
from exporter.core.model import HealthStatus
from exporter.core.sealing import Keyring, Sealed, Unsealable

# The rows of a persisted batch whose confirmed status may move: the newest result differs from what was
# confirmed (or nothing is yet) and agrees with the result before it (by slot): the two-in-a-row rule's
# precondition, so core/events.confirm decides only over candidates. In the steady state (status =
# confirmed) and on a single differing result this returns nothing and no more statements follow.
SELECT_UNCONFIRMED = """
SELECT s.org_id, s.integration_type, s.status, s.confirmed_status, s.latency_ms, s.checked_at, s.reason,
       s.error_message, p.status AS previous_status
FROM public.integration_health_status s
JOIN unnest($1::uuid[], $2::text[]) AS k(org_id, integration_type)
  ON s.org_id = k.org_id AND s.integration_type = k.integration_type
CROSS JOIN LATERAL (
    SELECT h.status FROM public.health_check_history h
    WHERE h.org_id = s.org_id AND h.integration_type = s.integration_type AND h.checked_at < s.checked_at
      AND NOT h.maintenance
    ORDER BY h.slot DESC LIMIT 1) p
WHERE s.confirmed_status IS DISTINCT FROM s.status AND p.status = s.status
  AND NOT s.maintenance  -- a result inside a maintenance window neither confirms a change nor counts as the one before"""

UPDATE_CONFIRMED = """
UPDATE public.integration_health_status s SET confirmed_status = c.status
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS c(org_id, integration_type, status)
WHERE s.org_id = c.org_id AND s.integration_type = c.integration_type"""

# One row per event and matching enabled subscription of its organisation; an event already written is kept.
ENQUEUE = """
INSERT INTO public.webhook_delivery (event_id, subscription_id, org_id, event_type, payload)
SELECT e.event_id, w.id, e.org_id, e.event_type, e.payload::jsonb
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[]) AS e(event_id, org_id, event_type, payload)
JOIN public.webhook_subscription w ON w.org_id = e.org_id AND w.enabled AND e.event_type = ANY (w.events)
ON CONFLICT (event_id, subscription_id) DO NOTHING"""

# Claim due deliveries of enabled subscriptions: lock them (other replicas skip them), count the attempt
# and push the next one past this attempt's deadline (`$2` seconds), in one statement.
CLAIM_DUE = """
WITH due AS (
    SELECT d.event_id, d.subscription_id
    FROM public.webhook_delivery d
    JOIN public.webhook_subscription w ON w.id = d.subscription_id AND w.enabled
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE public.webhook_delivery d
SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
FROM due, public.webhook_subscription w, public.webhook_secret s
WHERE d.event_id = due.event_id AND d.subscription_id = due.subscription_id
  AND w.id = d.subscription_id AND s.subscription_id = d.subscription_id
RETURNING d.event_id, d.subscription_id, d.org_id, d.event_type, d.payload, d.attempts, w.url, s.secret, s.key_id,
          s.sealed"""

SETTLE = """
UPDATE public.webhook_delivery
SET status = $3, next_attempt_at = now() + make_interval(secs => $4), last_error = $5, updated_at = now()
WHERE event_id = $1 AND subscription_id = $2 AND status = 'pending'"""

# A claimed delivery that cannot be signed (its secret does not open with the configured keys) waits, its
# attempt not counted: nothing was sent, and an operator's key mistake must not dead-letter anyone's events.
HOLD = """
UPDATE public.webhook_delivery
SET attempts = greatest(0, attempts - 1), next_attempt_at = now() + make_interval(secs => $3), last_error = $4,
    updated_at = now()
WHERE event_id = $1 AND subscription_id = $2 AND status = 'pending'"""

COUNT_PENDING = """
SELECT count(*) FROM public.webhook_delivery d
JOIN public.webhook_subscription w ON w.id = d.subscription_id AND w.enabled
WHERE d.status = 'pending'"""

# Finished rows are kept a while (the admin can read why a delivery died), then pruned in bounded bites.
PRUNE_FINISHED = """
DELETE FROM public.webhook_delivery WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM public.webhook_delivery
    WHERE status <> 'pending' AND updated_at < now() - make_interval(secs => $1) LIMIT $2))"""

# Subscriptions of one organisation are created one at a time: a transaction-level advisory lock on the
# organisation (two-int key space, apart from the single-key locks of migrations and history pruning; two
# organisations whose hashes collide merely wait for each other), taken before the count, so concurrent
# requests cannot each count below the limit and all insert (READ COMMITTED sees only committed rows).
LOCK_ORG_SUBSCRIPTIONS = "SELECT pg_advisory_xact_lock(1464420683, hashtext($1::uuid::text))"

INSERT_SUBSCRIPTION = """
WITH sub AS (
    INSERT INTO public.webhook_subscription (id, org_id, url, events)
    SELECT $1, $2, $3, $4
    WHERE (SELECT count(*) FROM public.webhook_subscription WHERE org_id = $2) < $7
    RETURNING id, org_id, url, events, enabled, created_at
), secret AS (
    INSERT INTO public.webhook_secret (subscription_id, key_id, sealed) SELECT id, $5, $6 FROM sub
)
SELECT * FROM sub"""

# Secrets to (re)seal under the current key: plaintext rows from before migration 0021, and rows sealed under
# another configured key. Locked, so replicas starting together split them; rows that would not open are
# passed over ($3) so one bad row cannot stall the rest.
SELECT_TO_SEAL = """
SELECT subscription_id, secret, key_id, sealed FROM public.webhook_secret
WHERE (secret IS NOT NULL OR (key_id <> $1 AND key_id = ANY ($2::text[])))
  AND subscription_id <> ALL ($3::uuid[])
ORDER BY subscription_id LIMIT $4
FOR UPDATE SKIP LOCKED"""

UPDATE_SEALED = """
UPDATE public.webhook_secret s SET secret = NULL, key_id = $1, sealed = u.sealed
FROM unnest($2::uuid[], $3::bytea[]) AS u(subscription_id, sealed)
WHERE s.subscription_id = u.subscription_id"""

COUNT_BY_KEY = """
SELECT coalesce(key_id, '') AS key_id, count(*) AS n FROM public.webhook_secret GROUP BY 1"""

SELECT_SUBSCRIPTIONS = """
SELECT id, org_id, url, events, enabled, created_at FROM public.webhook_subscription
WHERE org_id = $1 ORDER BY created_at, id"""

DELETE_SUBSCRIPTION = "DELETE FROM public.webhook_subscription WHERE org_id = $1 AND id = $2"


@dataclass(frozen=True, slots=True)
class Subscription:
    id: UUID
    org_id: UUID
    url: str
    events: list[str]
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt; `secret` is the subscription's signing key (never logged), None when
    it would not open, and `unsealable` then says why (naming the key id, never a key or a secret)."""

    event_id: UUID
    subscription_id: UUID
    org_id: UUID
    event_type: str
    payload: Any
    attempts: int
    url: str
    secret: str | None = ""
    unsealable: str | None = None

    def __repr__(self) -> str:  # no URL (it may be a capability) and no secret in any log or traceback
        return f"Claimed(event_id={self.event_id}, subscription_id={self.subscription_id}, attempts={self.attempts})"


def _subscription(r: asyncpg.Record) -> Subscription:
    return Subscription(r["id"], r["org_id"], r["url"], list(r["events"]), r["enabled"], r["created_at"])


async def enqueue(conn: asyncpg.Connection, batch: Sequence[Event]) -> None:
    """Write events to the outbox, one delivery per matching subscription; call inside the caller's transaction."""
    if not batch:
        return
    await conn.execute(ENQUEUE, [e.id for e in batch], [e.org_id for e in batch], [e.type.value for e in batch],
                       [json.dumps(e.body()) for e in batch])


def _status(value: str | None) -> HealthStatus | None:
    return HealthStatus(value) if value in HealthStatus.__members__.values() else None


async def enqueue_status_changes(conn: asyncpg.Connection, org_ids: Sequence[UUID],
                                 integration_types: Sequence[str]) -> list[Event]:
    """After a batch of results is stored, in its transaction: confirm statuses by the two-in-a-row rule and
    enqueue an event for each confirmed change (core/events.confirm decides). Returns the events."""
    rows = await conn.fetch(SELECT_UNCONFIRMED, list(org_ids), list(integration_types))
    confirmed: list[tuple[UUID, str, str]] = []
    news: list[Event] = []
    for r in rows:
        latest, before = HealthStatus(r["status"]), _status(r["confirmed_status"])
        after, changed = events.confirm(before, latest, _status(r["previous_status"]))
        if after == before:
            continue
        confirmed.append((r["org_id"], r["integration_type"], latest.value))
        if changed:
            news.append(events.status_changed(r["org_id"], r["integration_type"], before, latest, r["latency_ms"] or 0,
                                              r["checked_at"], r["reason"], r["error_message"]))
    if confirmed:
        await conn.execute(UPDATE_CONFIRMED, *map(list, zip(*confirmed, strict=True)))
    await enqueue(conn, news)
    return news


@dataclass(frozen=True, slots=True)
class Resealed:
    """What `reseal` did: plaintext secrets sealed, secrets moved to the current key, and what is left by key id
    ('' for plaintext): rows left under a key no longer configured stay unreadable until it is added back."""

    sealed: int
    rekeyed: int
    left: dict[str, int]


class NoKeyring(RuntimeError):
    """Secrets cannot be sealed or opened: EXPORTER_WEBHOOK_SECRET_KEYS is not set in this process."""


class Webhooks:
    """The webhook tables, as the API and the delivery worker use them (service_role); `keyring` seals and
    opens the signing secrets (None: this process can neither subscribe nor sign)."""

    def __init__(self, pool: asyncpg.Pool, keyring: Keyring | None = None) -> None:
        self.pool, self.keyring = pool, keyring

    def _keys(self) -> Keyring:
        if self.keyring is None:
            raise NoKeyring("webhook signing secrets need EXPORTER_WEBHOOK_SECRET_KEYS")
        return self.keyring

    async def subscribe(self, org_id: UUID, url: str, event_types: Sequence[str], secret: str,
                        max_per_org: int) -> Subscription | None:
        """Create a subscription and its sealed secret together; None when the organisation already has
        `max_per_org` (counted under the organisation's lock, so concurrent requests cannot pass it)."""
        subscription_id = uuid4()
        sealed = self._keys().seal(subscription_id, secret)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(LOCK_ORG_SUBSCRIPTIONS, org_id)
            row = await conn.fetchrow(INSERT_SUBSCRIPTION, subscription_id, org_id, url, list(event_types),
                                      sealed.key_id, sealed.blob, max_per_org)
        return _subscription(row) if row else None

    async def subscriptions(self, org_id: UUID) -> list[Subscription]:
        return [_subscription(r) for r in await self.pool.fetch(SELECT_SUBSCRIPTIONS, org_id)]

    async def unsubscribe(self, org_id: UUID, subscription_id: UUID) -> bool:
        """Delete one of the organisation's subscriptions (its secret and deliveries go with it)."""
        return await self.pool.execute(DELETE_SUBSCRIPTION, org_id, subscription_id) == "DELETE 1"

    async def _relaxed(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run the worker's bookkeeping without waiting for the WAL flush: a claim or an outcome lost in a
        crash only means a delivery is sent again, which receivers dedupe by Webhook-Id (at-least-once).
        The outbox rows themselves are written durably, in the transaction of what they announce."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            return await conn.fetch(query, *args)

    async def claim(self, limit: int, lease_s: float) -> list[Claimed]:
        rows = await self._relaxed(CLAIM_DUE, limit, lease_s)
        return [self._claimed(r) for r in rows]

    def _claimed(self, r: asyncpg.Record) -> Claimed:
        """The claimed row with its secret opened (a plaintext row not yet resealed is used as it is)."""
        secret, why = r["secret"], None
        if secret is None:
            try:
                secret = self._keys().open(r["subscription_id"], Sealed(r["key_id"], r["sealed"]))
            except (Unsealable, NoKeyring) as exc:
                why = str(exc)
        return Claimed(r["event_id"], r["subscription_id"], r["org_id"], r["event_type"], r["payload"],
                       r["attempts"], r["url"], secret, why)

    async def hold(self, claimed: Claimed, retry_in_s: float, error: str) -> None:
        """Put back a delivery that could not be signed, its attempt not counted: due again in `retry_in_s`."""
        await self._relaxed(HOLD, claimed.event_id, claimed.subscription_id, retry_in_s, error)

    async def reseal(self, batch: int = 500) -> Resealed:
        """Seal the plaintext secrets left by migration 0014 and move secrets sealed under an older configured
        key to the current one, `batch` rows per transaction; safe to run on every replica at once."""
        keys, skipped, sealed, rekeyed = self._keys(), [], 0, 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(SELECT_TO_SEAL, keys.current, list(keys.ids), skipped, batch)
                done: list[tuple[UUID, bytes]] = []
                for r in rows:
                    try:
                        plain = r["secret"] or keys.open(r["subscription_id"], Sealed(r["key_id"], r["sealed"]))
                    except Unsealable:
                        skipped.append(r["subscription_id"])
                        continue
                    done.append((r["subscription_id"], keys.seal(r["subscription_id"], plain).blob))
                    if r["secret"] is None:
                        rekeyed += 1
                    else:
                        sealed += 1
                if done:
                    await conn.execute(UPDATE_SEALED, keys.current, *map(list, zip(*done, strict=True)))
            if len(rows) < batch:
                break
        left = {r["key_id"]: r["n"] for r in await self.pool.fetch(COUNT_BY_KEY) if r["key_id"] != keys.current}
        return Resealed(sealed, rekeyed, left)

    async def settle(self, claimed: Claimed, status: str, retry_in_s: float = 0.0, error: str | None = None) -> None:
        """Record an attempt's outcome: delivered, dead, or pending again in `retry_in_s`."""
        await self._relaxed(SETTLE, claimed.event_id, claimed.subscription_id, status, retry_in_s, error)

    async def pending(self) -> int:
        return await self.pool.fetchval(COUNT_PENDING)

    async def prune(self, keep_s: float, limit: int = 1000) -> int:
        done = await self.pool.execute(PRUNE_FINISHED, keep_s, limit)
        return int(done.split()[-1])
