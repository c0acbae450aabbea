"""Fakes for tests and benchmarks: static credentials, adapters built over a context, a loopback session."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import SecretStr

from exporter.adapters import ADAPTERS
from exporter.adapters.base import Adapter, AdapterContext, HealthCheck, build_adapters
from exporter.adapters.client import HttpClient
from exporter.adapters.transport import make_session
from exporter.core.egress import EgressPolicy
from exporter.core.model import CREDENTIAL_REFUSED, CredentialError, IntegrationResult
from exporter.engine.runner import Runner
from exporter.storage.store import Store

# Tests' servers and the simulator listen on loopback: allowed here as an operator's EXPORTER_EGRESS_ALLOW would.
LOOPBACK = EgressPolicy.from_allow(["127.0.0.0/8", "::1"])


def loopback_session(**options: Any) -> HttpClient:
    """The service's session (make_session, so the egress policy is enforced) with loopback allowed."""
    return make_session(policy=LOOPBACK, **options)


class StaticCredentials:
    """The same secrets for every organisation (ownership is tested against the real providers); counts reads
    and remembers what adapters asked it to forget."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = {k: SecretStr(v) for k, v in secrets.items()}
        self.reads = 0
        self.forgotten: list[tuple[UUID, str]] = []
        self.expiries: dict[str, datetime] = {}

    async def get(self, org_id: UUID, ref: str) -> SecretStr:
        self.reads += 1
        try:
            return self._secrets[ref]
        except KeyError:
            raise CredentialError(CREDENTIAL_REFUSED) from None

    def forget(self, org_id: UUID, ref: str) -> None:
        self.forgotten.append((org_id, ref))

    def set(self, ref: str, secret: str) -> None:
        """Rotate (or add) a secret."""
        self._secrets[ref] = SecretStr(secret)

    async def expiry(self, org_id: UUID, ref: str) -> datetime | None:
        """What `expiries` says for `ref` (the store's metadata), None when unknown."""
        return self.expiries.get(ref)

    async def prefetch(self, keys: Collection[tuple[UUID, str]]) -> None:
        """Nothing is cached here."""


def runner_for(ctx: AdapterContext, checks: Mapping[str, Callable[[AdapterContext], HealthCheck]] | None = None,
               **options: Any) -> Runner:
    """A Runner over the registered adapters built on `ctx`, or over fake checks under registered type names
    (validated by that type's real config model)."""
    if checks is None:
        adapters = build_adapters(ADAPTERS, ctx)
    else:
        adapters = {name: Adapter(ADAPTERS[name].config, factory(ctx)) for name, factory in checks.items()}
    return Runner(adapters, clock=ctx.clock, monotonic=ctx.monotonic, **options)


async def check_org(org_id: UUID, *, store: Store, runner: Runner, slot: datetime) -> list[IntegrationResult]:
    """Load an org's enabled integrations, check them, persist: the bare path, without the scheduler's state."""
    results = await runner.run(await store.load_integrations(org_id))
    await store.persist(results, slot)
    return results


class CountingPool:
    """A pool that counts the connections taken: each is one query of the vault provider (the credential
    batch tests and bench/cycle.py count the store's queries with it)."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.queries = pool, 0

    def acquire(self) -> Any:
        self.queries += 1
        return self.pool.acquire()
