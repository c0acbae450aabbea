"""Scale-out: replicas share the shards through leases in Postgres (FOR UPDATE SKIP LOCKED), each
holding a fair share, renewed while alive and taken over by the others after it lapses."""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from uuid import UUID

import asyncpg

from exporter.storage.store import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

HEARTBEAT = """
INSERT INTO public.integration_health_replicas (replica_id, seen_at) VALUES ($1, now())
ON CONFLICT (replica_id) DO UPDATE SET seen_at = now()"""
LIVE_REPLICAS = """
SELECT count(*) FROM public.integration_health_replicas WHERE seen_at > now() - make_interval(secs => $1)"""
TOTAL_SHARDS = "SELECT count(*) FROM public.integration_health_shards"
RENEW = """
UPDATE public.integration_health_shards SET lease_until = now() + make_interval(secs => $2)
WHERE owner = $1 RETURNING shard"""
RELEASE = """
UPDATE public.integration_health_shards SET owner = NULL, lease_until = NULL
WHERE owner = $1 AND shard = ANY($2::int[])"""
CLAIM = """
WITH free AS (
    SELECT shard FROM public.integration_health_shards
    WHERE owner IS NULL OR lease_until < now()
    ORDER BY shard
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE public.integration_health_shards s SET owner = $1, lease_until = now() + make_interval(secs => $2)
FROM free WHERE s.shard = free.shard
RETURNING s.shard"""
# Rebalancing without a gap: a replica short of its share takes shards straight from replicas holding
# more than the share (ownership moves in one UPDATE), instead of waiting for them to be released.
STEAL = """
WITH counts AS (
    SELECT owner, count(*) AS n FROM public.integration_health_shards
    WHERE owner IS NOT NULL AND owner <> $1 AND lease_until >= now()
    GROUP BY owner
), surplus AS (
    SELECT s.shard, c.n, row_number() OVER (PARTITION BY s.owner ORDER BY s.shard DESC) AS rn
    FROM public.integration_health_shards s JOIN counts c ON c.owner = s.owner
), taken AS (
    SELECT shard FROM public.integration_health_shards
    WHERE shard IN (SELECT shard FROM surplus WHERE rn <= n - $3)
    ORDER BY shard
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE public.integration_health_shards s SET owner = $1, lease_until = now() + make_interval(secs => $2)
FROM taken WHERE s.shard = taken.shard
RETURNING s.shard"""
GOODBYE = "DELETE FROM public.integration_health_replicas WHERE replica_id = $1"


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def shard_of(org_id: UUID, total: int) -> int:
    """The same as SQL's integration_health_shard_of(): the id's low 32 bits modulo the shard count."""
    return (org_id.int & 0xFFFFFFFF) % total


class ShardLeases:
    """This replica's leases. `maintain()` (each cycle and every ttl/3) renews its leases, then claims
    free or lapsed shards, then takes from replicas above the fair share, until it holds its share of
    the live replicas. A replica above its share keeps its shards until another takes them, so no shard
    is ever without an owner; a database error keeps the shards it has."""

    def __init__(self, pool: asyncpg.Pool, replica_id: str | None = None, ttl_s: float = 30.0) -> None:
        if ttl_s <= 0:
            raise ValueError("the lease TTL must be > 0 seconds")
        self.pool, self.replica_id, self.ttl_s = pool, replica_id or default_replica_id(), ttl_s
        self.owned: frozenset[int] = frozenset()
        self.total = 0

    def owns(self, org_id: UUID) -> bool:
        return self.total > 0 and shard_of(org_id, self.total) in self.owned

    async def maintain(self) -> frozenset[int]:
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(HEARTBEAT, self.replica_id)
                self.total = await conn.fetchval(TOTAL_SHARDS)
                live = max(1, await conn.fetchval(LIVE_REPLICAS, self.ttl_s))
                owned = {r["shard"] for r in await conn.fetch(RENEW, self.replica_id, self.ttl_s)}
                fair = math.ceil(self.total / live)
                if len(owned) < fair:
                    owned |= {r["shard"] for r in await conn.fetch(CLAIM, self.replica_id, self.ttl_s,
                                                                   fair - len(owned))}
                if len(owned) < fair:
                    owned |= {r["shard"] for r in await conn.fetch(STEAL, self.replica_id, self.ttl_s, fair,
                                                                   fair - len(owned))}
        except (*TRANSIENT_ERRORS, asyncpg.PostgresError) as exc:  # a read-only standby after a failover, too
            log.warning("cannot renew shard leases (%s); keeping the %d shards held", type(exc).__name__,
                        len(self.owned))
            return self.owned
        if owned != self.owned:
            log.info("now holding %d of %d shards (%s)", len(owned), self.total, self.replica_id)
        self.owned = frozenset(owned)
        return self.owned

    async def release_all(self) -> None:
        """On shutdown: hand the shards over at once instead of after the TTL."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(RELEASE, self.replica_id, list(self.owned))
                await conn.execute(GOODBYE, self.replica_id)
        except TRANSIENT_ERRORS:
            log.warning("could not release shard leases; they lapse after %.0f s", self.ttl_s)
        self.owned = frozenset()
