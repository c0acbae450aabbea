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
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
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


# The one way the service reads the vault: migrations/0011_org_credentials.sql defines the function (SECURITY
# DEFINER), which returns only a secret named `<org_id>/<ref>`, or the one with id `ref` if it carries that prefix.
VAULT_LOOKUP = "SELECT public.integration_health_credential($1, $2)"
# Its companion (migrations/0018_credential_expiry.sql): the same secret's `expires_at=` value, never the secret.
VAULT_EXPIRY = "SELECT public.integration_health_credential_expiry($1, $2)"


class SupabaseVaultCredentials:
    """Secrets from Supabase Vault through `public.integration_health_credential(org_id, ref)`.

    The service's role needs EXECUTE on that function only (migrations grant it to service_role), never
    SELECT on vault.decrypted_secrets.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

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


class CachedCredentials:
    """Cache another provider's answers by (org_id, ref) for `ttl` seconds, so rotated secrets are picked up
    soon; `forget` drops one at once (a vendor refused it: the next check reads the rotated one).

    While the vault itself is unavailable (CredentialUnavailable), the last secret read is used for up to
    `stale_s` more: a vault or database outage must not turn into failed checks and credential alerts.
    """

    def __init__(self, inner: CredentialProvider, ttl: float = 300.0, stale_s: float = 3600.0,
                 monotonic: Callable[[], float] = time.monotonic, read_timeout_s: float = 2.0) -> None:
        if ttl < 0:
            raise ValueError("ttl must be >= 0")
        if stale_s < 0:
            raise ValueError("stale_s must be >= 0")
        self._inner, self._ttl, self._stale_s, self._now = inner, ttl, stale_s, monotonic
        self._read_timeout_s = read_timeout_s
        self._cache: dict[tuple[UUID, str], tuple[float, SecretStr]] = {}
        self._expiries: dict[tuple[UUID, str], tuple[float, datetime | None]] = {}
        self._outage = False  # logged once per outage, not once per check

    async def get(self, org_id: UUID, ref: str) -> SecretStr:
        key = (org_id, ref)
        hit = self._cache.get(key)
        if hit and self._now() < hit[0]:
            return hit[1]
        try:
            try:  # a store that stops answering must fail fast, within the check's deadline, as unavailable
                async with asyncio.timeout(self._read_timeout_s):
                    secret = await self._inner.get(org_id, ref)
            except TimeoutError:
                raise CredentialUnavailable(f"no answer within {self._read_timeout_s:g} s") from None
        except CredentialUnavailable as exc:
            if not self._outage:
                log.warning("the credential store is unavailable (%s): using the secrets last read for up to "
                            "%.0f s more", exc, self._stale_s)
                self._outage = True
            if hit and self._now() < hit[0] + self._stale_s:
                return hit[1]
            raise
        if self._outage:
            log.info("the credential store answers again")
            self._outage = False
        self._cache[key] = (self._now() + self._ttl, secret)
        return secret

    async def expiry(self, org_id: UUID, ref: str) -> datetime | None:
        """The inner provider's answer, kept as long as a secret; while the store is unavailable, the last
        answer stands (an outage must not make a known expiry, and its alert, disappear)."""
        key = (org_id, ref)
        hit = self._expiries.get(key)
        if hit and self._now() < hit[0]:
            return hit[1]
        try:
            async with asyncio.timeout(self._read_timeout_s):
                when = await self._inner.expiry(org_id, ref)
        except (CredentialUnavailable, TimeoutError):
            return hit[1] if hit else None
        self._expiries[key] = (self._now() + self._ttl, when)
        return when

    def forget(self, org_id: UUID, ref: str) -> None:
        self._cache.pop((org_id, ref), None)
        self._expiries.pop((org_id, ref), None)
        self._inner.forget(org_id, ref)
