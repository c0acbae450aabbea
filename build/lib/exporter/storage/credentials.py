"""Credential providers: adapters fetch secrets by reference; the framework never holds one."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from exporter.core.model import CredentialError, CredentialProvider

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class DirectoryCredentials:
    """One file per secret in a mounted directory (Docker and Kubernetes secrets); trailing newline trimmed."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    async def get(self, ref: str) -> SecretStr:
        if not _SAFE_NAME.match(ref):
            raise CredentialError(f"credential reference {ref!r} is not a plain file name")
        try:
            return SecretStr((self._directory / ref).read_text().rstrip("\r\n"))
        except OSError:
            raise CredentialError(f"credential {ref!r} not found in {self._directory}") from None


VAULT_LOOKUP = """
SELECT decrypted_secret FROM vault.decrypted_secrets
WHERE name = $1 OR id::text = $1
ORDER BY (name = $1) DESC
LIMIT 1"""


class SupabaseVaultCredentials:
    """Secrets from Supabase Vault (`vault.decrypted_secrets`), by secret name or id.

    Reads over the service's own pool; the pool's role needs SELECT on vault.decrypted_secrets.
    """

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def get(self, ref: str) -> SecretStr:
        try:
            async with self._pool.acquire() as conn:
                value = await conn.fetchval(VAULT_LOOKUP, ref)
        except Exception as exc:  # asyncpg errors name the relation, never a secret value
            raise CredentialError(f"vault lookup for {ref!r} failed: {type(exc).__name__}") from None
        if value is None:
            raise CredentialError(f"credential {ref!r} not found in the vault")
        return SecretStr(value)


class CachedCredentials:
    """Cache another provider's answers for `ttl` seconds, so rotated secrets are picked up soon."""

    def __init__(self, inner: CredentialProvider, ttl: float = 300.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if ttl < 0:
            raise ValueError("ttl must be >= 0")
        self._inner, self._ttl, self._now = inner, ttl, monotonic
        self._cache: dict[str, tuple[float, SecretStr]] = {}

    async def get(self, ref: str) -> SecretStr:
        hit = self._cache.get(ref)
        if hit and self._now() < hit[0]:
            return hit[1]
        secret = await self._inner.get(ref)
        self._cache[ref] = (self._now() + self._ttl, secret)
        return secret
