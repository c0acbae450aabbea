"""What every adapter shares: the HealthCheck protocol, the context it is built with, and its registration spec."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from exporter.adapters.client import HttpClient
from exporter.core.egress import VendorHosts
from exporter.core.model import CredentialError, CredentialProvider, HealthResult, IntegrationConfigBase, utcnow

log = logging.getLogger(__name__)
EXPIRY_LOOKUP_TIMEOUT_S = 3.0  # the store's metadata is cached with the secret; a slow store must not hold the check


class HealthCheck(Protocol):
    async def check(self, org_id: UUID, config: Any) -> HealthResult:
        """Check one integration and return its result; may raise, the runner maps exceptions."""
        ...


@dataclass(frozen=True)
class AdapterContext:
    """What adapters are built with, once per process: the shared HTTP session, credentials, clocks, and
    the vendor hosts its type may reach (set by build_adapters from the spec; None: any public host)."""

    session: HttpClient
    credentials: CredentialProvider | None = None
    clock: Callable[[], datetime] = utcnow
    monotonic: Callable[[], float] = time.monotonic
    vendor: VendorHosts | None = None

    async def secret(self, org_id: UUID, ref: str | None) -> str:
        """Resolve the organisation's credential reference; a missing provider or reference, or a reference
        to a secret the organisation does not own, is a CredentialError."""
        if not ref:
            raise CredentialError("this integration needs a credential_ref")
        if self.credentials is None:
            raise CredentialError("no credential provider is configured")
        return (await self.credentials.get(org_id, ref)).get_secret_value()

    def forget_secret(self, org_id: UUID, ref: str | None) -> None:
        """Drop a cached credential the vendor refused, so the next check reads the vault again."""
        if ref and self.credentials is not None:
            self.credentials.forget(org_id, ref)


class ForgetsRefusedCredentials:
    """A check that, when the vendor refused its credentials (or the secret could not be used), drops the
    cached secret: a rotated or fixed secret then counts on the next check, not after the cache's TTL."""

    def __init__(self, inner: HealthCheck, ctx: AdapterContext) -> None:
        self.inner, self.ctx = inner, ctx

    async def check(self, org_id: UUID, config: Any) -> HealthResult:
        ref = getattr(config, "credential_ref", None)
        try:
            result = await self.inner.check(org_id, config)
        except CredentialError:
            self.ctx.forget_secret(org_id, ref)
            raise
        if result.reason is not None and result.reason.is_auth:
            self.ctx.forget_secret(org_id, ref)
        return result


class ReportsCredentialExpiry:
    """A check whose result carries when its credential expires, from the credential store's metadata
    (the vault's `expires_at=` description, a directory's `<ref>.expires_at` file), unless the adapter
    found it from the vendor itself (Dynamics 365 via Microsoft Graph), which knows better."""

    def __init__(self, inner: HealthCheck, ctx: AdapterContext) -> None:
        self.inner, self.ctx = inner, ctx

    async def check(self, org_id: UUID, config: Any) -> HealthResult:
        result = await self.inner.check(org_id, config)
        ref = getattr(config, "credential_ref", None)
        if result.credential_expires_at is not None or not ref or self.ctx.credentials is None:
            return result
        try:
            async with asyncio.timeout(EXPIRY_LOOKUP_TIMEOUT_S):
                when = await self.ctx.credentials.expiry(org_id, ref)
        except Exception as exc:  # an expiry is extra information: never a reason for the check to fail
            log.debug("credential expiry lookup failed: %s", type(exc).__name__, extra={"org_id": str(org_id)})
            return result
        return replace(result, credential_expires_at=when) if when else result


@dataclass(frozen=True)
class AdapterSpec:
    """One integration type, registered once in ADAPTERS: its config model, its check, and for a vendor
    type the hosts its requests may go to (https only; None: any public host, http or https)."""

    config: type[IntegrationConfigBase]
    factory: Callable[[AdapterContext], HealthCheck]
    interval_s: int | None = None  # the type's default check interval, when a check costs (billed requests)
    hosts: VendorHosts | None = None  # a vendor type's own hosts (https only); None: any public host


@dataclass(frozen=True)
class Adapter:
    """A spec built for this process: its check instance keeps its caches (tokens, sessions) between checks."""

    config: type[IntegrationConfigBase]
    check: HealthCheck


def build_adapters(specs: Mapping[str, AdapterSpec], ctx: AdapterContext) -> dict[str, Adapter]:
    """Build every registered adapter once; the composition root calls this, the runner uses the result."""
    return {name: _build(spec, replace(ctx, vendor=spec.hosts)) for name, spec in specs.items()}


def _build(spec: AdapterSpec, ctx: AdapterContext) -> Adapter:
    """One adapter on a context that carries its type's vendor hosts, which fetch holds its requests to."""
    return Adapter(spec.config, ReportsCredentialExpiry(ForgetsRefusedCredentials(spec.factory(ctx), ctx), ctx))
