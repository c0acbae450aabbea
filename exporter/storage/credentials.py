"""Credential providers: adapters fetch secrets by (org_id, reference); a reference resolves only to a
secret of that organisation, decided from the row's org_id, which the tenant's config cannot choose.

A secret may also say when it expires (`expiry`), by the same ownership rule: in the vault, a token
`expires_at=<ISO 8601>` in the secret's description; in a directory, a sibling file `<name>.expires_at`.

The convention (operator-controlled): an organisation's secrets are named `<org_id>/<name>` in the vault,
or are files `<dir>/<org_id>/<name>`; `credential_ref` is the `<name>` part (or, in the vault, the id of a
secret whose name carries the organisation's prefix). Every refusal reads the same (CREDENTIAL_REFUSED).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from pydantic import SecretStr

from exporter.core.model import (
    CREDENTIAL_REFUSED,
    CredentialError,
    CredentialProvider,
    CredentialUnavailable,
    is_plain_ref,
    parse_expiry,
)

log = logging.getLogger(__name__)

EXPIRY_SUFFIX = ".expires_at"  # the directory convention: `<dir>/<org_id>/<ref>.expires_at` holds an ISO timestamp

Key = tuple[UUID, str]  # (org_id, credential_ref)


@dataclass(frozen=True, slots=True)
class Stored:
    """One pair as the store answered it in a batch: the secret (None: refused, as get would refuse it) and
    when it expires (None: unknown)."""

    secret: SecretStr | None
    expires_at: datetime | None = None


REFUSED = Stored(None)


@runtime_checkable
class ReadsMany(Protocol):
    """A store that answers many pairs in one round trip (CachedCredentials.prefetch reads through it)."""

    batch_size: int  # pairs per read_many call at most

    async def read_many(self, keys: Sequence[Key]) -> dict[Key, Stored]:
        """Every pair of `keys` (at most batch_size), each judged alone by the ownership rule; raises
        CredentialUnavailable when the store could not be asked."""
        ...


def read_expiry(org_id: UUID, ref: str, value: str | None) -> datetime | None:
    """Parse an expiry the store gave for (org_id, ref); a malformed one is logged (naming the reference,
    never the secret or the value) and ignored."""
    if value is None:
        return None
    try:
        return parse_expiry(value)
    except ValueError:
        log.warning("credential %r: its expiry is not an ISO 8601 date or time; ignored", ref,
                    extra={"org_id": str(org_id)})
        return None


class DirectoryCredentials:
    """One file per secret, one directory per organisation: `<dir>/<org_id>/<ref>` (Docker and Kubernetes
    secrets); trailing newline trimmed."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def get(self, org_id: UUID, ref: str) -> SecretStr:
        if not is_plain_ref(ref):  # no separators, no dot-files: the path stays inside the org's directory
            raise CredentialError(CREDENTIAL_REFUSED)
        try:
            return SecretStr((self._directory / str(UUID(str(org_id))) / ref).read_text().rstrip("\r\n"))
        except (OSError, ValueError):  # missing, unreadable, not text, or an org_id that is no UUID
            raise CredentialError(CREDENTIAL_REFUSED) from None

    def forget(self, org_id: UUID, ref: str) -> None:
        """Nothing is cached here."""

    async def expiry(self, org_id: UUID, ref: str) -> datetime | None:
        if not is_plain_ref(ref):
            return None
        try:
            path = self._directory / str(UUID(str(org_id))) / (ref + EXPIRY_SUFFIX)
            value = path.read_text()[:256]
        except (OSError, ValueError):  # no expiry file: unknown
            return None
        return read_expiry(org_id, ref, value)

    async def prefetch(self, keys: Collection[Key]) -> None:
        """Nothing is cached here, and nothing read ahead (no ReadsMany): a file costs no round trip, and a
        cycle's files read in one go would hold the event loop; each check reads its own."""


# The one way the service reads the vault: migrations/0011_org_credentials.sql defines the function (SECURITY
# DEFINER), which returns only a secret named `<org_id>/<ref>`, or the one with id `ref` if it carries that prefix.
VAULT_LOOKUP = "SELECT public.integration_health_credential($1, $2)"
# Its companion (migrations/0018_credential_expiry.sql): the same secret's `expires_at=` value, never the secret.
VAULT_EXPIRY = "SELECT public.integration_health_credential_expiry($1, $2)"
# Both for many pairs at once, by the same rule (migrations/0024_credential_batch.sql; at most 10,000 a call).
VAULT_BATCH = ("SELECT org_id, ref, secret, expires_at "
               "FROM public.integration_health_credentials($1::uuid[], $2::text[])")
VAULT_BATCH_MAX = 10_000


class SupabaseVaultCredentials:
    """Secrets from Supabase Vault through `public.integration_health_credential(org_id, ref)`, and a cycle's
    in batches through `public.integration_health_credentials(org_ids, refs)`.

    The service's role needs EXECUTE on those functions only (migrations grant it to service_role), never
    SELECT on vault.decrypted_secrets. A cycle's pairs are read `batch_size` at a time (read_many), each
    call one round trip that answers in well under the cache's read timeout.
    """

    def __init__(self, pool: Any, batch_size: int = 2_000) -> None:
        if not 0 < batch_size <= VAULT_BATCH_MAX:
            raise ValueError(f"batch_size must be between 1 and {VAULT_BATCH_MAX}")
        self._pool, self.batch_size = pool, batch_size

    async def get(self, org_id: UUID, ref: str) -> SecretStr:
        if not is_plain_ref(ref):  # refused before the database sees it (NUL bytes, megabyte strings)
            raise CredentialError(CREDENTIAL_REFUSED)
        try:
            async with self._pool.acquire() as conn:
                value = await conn.fetchval(VAULT_LOOKUP, org_id, ref)
        except Exception as exc:  # asyncpg errors name the relation, never a secret value
            raise CredentialUnavailable(f"vault lookup failed: {type(exc).__name__}") from None
        if value is None:
            raise CredentialError(CREDENTIAL_REFUSED)
        return SecretStr(value)

    def forget(self, org_id: UUID, ref: str) -> None:
        """Nothing is cached here."""

    async def expiry(self, org_id: UUID, ref: str) -> datetime | None:
        if not is_plain_ref(ref):
            return None
        try:
            async with self._pool.acquire() as conn:
                value = await conn.fetchval(VAULT_EXPIRY, org_id, ref)
        except Exception as exc:
            raise CredentialUnavailable(f"vault lookup failed: {type(exc).__name__}") from None
        return read_expiry(org_id, ref, value)

    async def read_many(self, keys: Sequence[Key]) -> dict[Key, Stored]:
        if len(keys) > self.batch_size:
            raise ValueError(f"at most {self.batch_size} pairs per read")
        found = dict.fromkeys(keys, REFUSED)  # what the function does not answer, it refused
        asked = [(org_id, ref) for org_id, ref in found if is_plain_ref(ref)]  # the rest never reach SQL
        if not asked:
            return found
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(VAULT_BATCH, [o for o, _ in asked], [r for _, r in asked])
        except Exception as exc:  # as get: the error's type, never a value
            raise CredentialUnavailable(f"vault lookup failed: {type(exc).__name__}") from None
        for row in rows:
            key = (row["org_id"], row["ref"])
            if key in found and row["secret"] is not None:  # only what was asked: never a pair it did not send
                found[key] = Stored(SecretStr(row["secret"]), read_expiry(key[0], key[1], row["expires_at"]))
        return found

    async def prefetch(self, keys: Collection[Key]) -> None:
        """Nothing is cached here."""


class CachedCredentials:
    """Cache another provider's answers by (org_id, ref) for `ttl` seconds, so rotated secrets are picked up
    soon; `forget` drops one at once (a vendor refused it: the next check reads the rotated one).

    While the vault itself is unavailable (CredentialUnavailable), the last secret read is used for up to
    `stale_s` more: a vault or database outage must not turn into failed checks and credential alerts.

    `prefetch` reads a cycle's pairs before its checks start, in batches when the store can (ReadsMany): each
    check then finds its secret and expiry here instead of asking the store twice on its own. A get of a pair
    whose batch is being read waits for that batch (at most the read timeout), so checks can start while the
    later batches are still read (services.credentials_ahead).
    """

    def __init__(self, inner: CredentialProvider, ttl: float = 300.0, stale_s: float = 3600.0,
                 monotonic: Callable[[], float] = time.monotonic, read_timeout_s: float = 2.0) -> None:
        if ttl < 0:
            raise ValueError("ttl must be >= 0")
        if stale_s < 0:
            raise ValueError("stale_s must be >= 0")
        self._inner, self._ttl, self._stale_s, self._now = inner, ttl, stale_s, monotonic
        self._read_timeout_s = read_timeout_s
        # None: refused when prefetched, answered once (get itself caches no refusal)
        self._cache: dict[Key, tuple[float, SecretStr | None]] = {}
        self._expiries: dict[Key, tuple[float, datetime | None]] = {}
        self._outage = False  # logged once per outage, not once per check
        self._prefetching = 0  # prefetches under way; while any is, the keys get or forget set are noted:
        self._touched: set[Key] = set()  # a batch read before them must not overwrite what they did
        self._reading: dict[Key, asyncio.Future[None]] = {}  # pairs a prefetch is reading → done when its batch is

    async def get(self, org_id: UUID, ref: str) -> SecretStr:
        key = (org_id, ref)
        budget = await self._batch_of(key) if key in self._reading else self._read_timeout_s
        hit = self._cache.get(key)
        if hit and self._now() < hit[0]:
            if hit[1] is None:  # once: a secret added since is read on the next get, whatever the TTL
                del self._cache[key]
                raise CredentialError(CREDENTIAL_REFUSED)
            return hit[1]
        try:
            try:  # a store that stops answering must fail fast, within the check's deadline, as unavailable
                async with asyncio.timeout(budget):
                    secret = await self._inner.get(org_id, ref)
            except TimeoutError:
                raise CredentialUnavailable(f"no answer within {self._read_timeout_s:g} s") from None
        except CredentialUnavailable as exc:
            self._unavailable(exc)
            if hit and hit[1] is not None and self._now() < hit[0] + self._stale_s:
                return hit[1]
            raise
        self._available()
        self._cache[key] = (self._now() + self._ttl, secret)
        self._touch(key)
        return secret

    async def _batch_of(self, key: Key) -> float:
        """Wait for the batch reading `key` (a check that started before it came): its answer, not a query of
        the check's own. What is left of the read timeout is the budget of the check's own query, if it still
        needs one: the read sits inside the check's deadline, and a wait for the batch then a full read of its
        own would let a slow store take twice the timeout from a vendor's answer."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait({self._reading[key]}, timeout=self._read_timeout_s)
        return max(0.0, self._read_timeout_s - (loop.time() - start))

    def _touch(self, key: Key) -> None:
        if self._prefetching:
            self._touched.add(key)

    def _unavailable(self, exc: Exception) -> None:
        if not self._outage:
            log.warning("the credential store is unavailable (%s): using the secrets last read for up to "
                        "%.0f s more", exc, self._stale_s)
            self._outage = True

    def _available(self) -> None:
        if self._outage:
            log.info("the credential store answers again")
            self._outage = False

    async def expiry(self, org_id: UUID, ref: str) -> datetime | None:
        """The inner provider's answer, kept as long as a secret; while the store is unavailable, the last
        answer stands (an outage must not make a known expiry, and its alert, disappear)."""
        if not is_plain_ref(ref):  # never asked, never kept: a tenant's megabyte reference stays out of memory
            return None
        key = (org_id, ref)
        budget = await self._batch_of(key) if key in self._reading else self._read_timeout_s
        hit = self._expiries.get(key)
        if hit and self._now() < hit[0]:
            return hit[1]
        try:
            async with asyncio.timeout(budget):
                when = await self._inner.expiry(org_id, ref)
        except (CredentialUnavailable, TimeoutError):
            return hit[1] if hit else None
        self._expiries[key] = (self._now() + self._ttl, when)
        return when

    def forget(self, org_id: UUID, ref: str) -> None:
        self._cache.pop((org_id, ref), None)
        self._expiries.pop((org_id, ref), None)
        self._touch((org_id, ref))
        self._inner.forget(org_id, ref)

    async def prefetch(self, keys: Collection[Key]) -> None:
        """Read the pairs not cached, or with less than half the TTL left, `batch_size` a time, each batch
        within the read timeout; every pair then stays cached for at least ttl/2 (a cycle's checks take
        far less; services.credentials_ahead reads ahead again while a long cycle runs). A batch that fails is
        an outage as for get: logged once, the last secrets keep serving, the batches after it are not tried
        (each check asks on its own, as before).

        Only plain references are kept (others are refused without a query, as get refuses them), expiries
        only of secrets found, and what has been stale for longer than `stale_s` is dropped first: a tenant
        writing new references cannot grow the cache. A get or forget of a key while its batch is read wins
        over the batch (a secret rotated meanwhile is not put back)."""
        self._evict()  # whatever the store: each cycle prefetches, so nothing stale outlives its allowance long
        if not isinstance(self._inner, ReadsMany) or self._ttl == 0:
            return  # nothing to batch, or nothing kept: each check asks the store itself
        soon, never = self._now() + self._ttl / 2, (-math.inf,)
        todo = [key for key in dict.fromkeys(keys)
                if is_plain_ref(key[1]) and key not in self._reading and self._due(key, soon, never)]
        self._prefetching += 1
        try:
            await self._read_ahead(todo, self._inner)
        finally:
            self._prefetching -= 1
            if not self._prefetching:
                self._touched.clear()

    def _due(self, key: Key, soon: float, never: tuple[float]) -> bool:
        """Read again: missing or soon past its TTL; a refusal (no secret, so no expiry kept) by its entry alone."""
        until, secret = self._cache.get(key, (never[0], None))
        if until < soon:
            return True
        return secret is not None and self._expiries.get(key, never)[0] < soon

    def _evict(self) -> None:
        """Drop what is past its TTL and the stale allowance on top: nothing would serve it any more."""
        gone = self._now() - self._stale_s
        for cache in (self._cache, self._expiries):
            for key in [key for key, (until, _) in cache.items() if until < gone]:
                del cache[key]

    async def _read_ahead(self, todo: list[Key], inner: ReadsMany) -> None:
        size = inner.batch_size
        loop = asyncio.get_running_loop()
        batches = [(todo[at:at + size], loop.create_future()) for at in range(0, len(todo), size)]
        for keys, done in batches:  # noted before the first read: a get of any of them waits for its batch
            self._reading.update(dict.fromkeys(keys, done))
        try:
            await self._read_batches(batches, inner)
        finally:  # read, failed or cancelled: whoever still waits asks the store alone
            for keys, done in batches:
                self._answered(keys, done)

    def _answered(self, keys: list[Key], done: asyncio.Future[None]) -> None:
        if not done.done():
            done.set_result(None)
            for key in keys:
                if self._reading.get(key) is done:
                    del self._reading[key]

    async def _read_batches(self, batches: list[tuple[list[Key], asyncio.Future[None]]], inner: ReadsMany) -> None:
        for keys, done in batches:
            try:
                try:
                    async with asyncio.timeout(self._read_timeout_s):
                        found = await inner.read_many(keys)
                except TimeoutError:
                    raise CredentialUnavailable(f"no answer within {self._read_timeout_s:g} s") from None
            except CredentialUnavailable as exc:
                self._unavailable(exc)
                return
            self._available()
            until = self._now() + self._ttl
            for key, stored in found.items():
                if key in self._touched:
                    continue
                held = self._cache.get(key)  # an unchanged secret stays the object held: the copy read dies
                self._cache[key] = (until, held[1] if held and held[1] == stored.secret else stored.secret)
                if stored.secret is not None:
                    self._expiries[key] = (until, stored.expires_at)
            self._answered(keys, done)
