"""Run the checks of a set of integrations concurrently; every outcome, good or bad, becomes a result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

import aiohttp

from exporter.adapters.base import (
    AdapterContext,
    AdapterFactory,
    BodyTooLarge,
    TooManyRedirects,
)
from exporter.credentials import CredentialError
from exporter.model import (
    HealthResult,
    HealthStatus,
    Integration,
    IntegrationResult,
    InvalidConfig,
    Reason,
    make_result,
    parse_config,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
Failure = tuple[HealthStatus, Reason, str]


def describe_exception(exc: BaseException) -> Failure:
    """Map an adapter's exception to a status, a bounded reason and a short human message (no secrets)."""
    match exc:
        case CredentialError():
            return HealthStatus.DEGRADED, Reason.AUTH, f"credential unavailable: {exc}"
        case InvalidConfig() | aiohttp.InvalidURL():
            return HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG, f"invalid configuration: {exc}"
        case aiohttp.ClientConnectorDNSError():
            return HealthStatus.UNREACHABLE, Reason.DNS, f"DNS lookup failed for {exc.host}"
        case aiohttp.ClientConnectorCertificateError():
            return HealthStatus.UNREACHABLE, Reason.TLS, f"TLS certificate rejected for {exc.host}"
        case aiohttp.ClientSSLError() | ssl.SSLError():
            return HealthStatus.UNREACHABLE, Reason.TLS, "TLS handshake failed"
        case aiohttp.ClientConnectorError():
            why = exc.os_error.strerror or type(exc.os_error).__name__
            return HealthStatus.UNREACHABLE, Reason.CONNECT, f"cannot connect to {exc.host}:{exc.port}: {why}"
        case aiohttp.ServerDisconnectedError() | aiohttp.ClientOSError() | ConnectionError():
            return HealthStatus.UNREACHABLE, Reason.CONNECT, "connection closed or reset by the server"
        case TimeoutError():
            return HealthStatus.UNREACHABLE, Reason.TIMEOUT, "timed out"
        case aiohttp.TooManyRedirects() | TooManyRedirects():
            return HealthStatus.DEGRADED, Reason.BAD_RESPONSE, "too many redirects (redirect loop?)"
        case aiohttp.ClientPayloadError():
            return HealthStatus.UNREACHABLE, Reason.CONNECT, "the answer was cut off (connection closed mid-body)"
        case aiohttp.ClientResponseError() if not isinstance(exc, aiohttp.ContentTypeError):
            # A parse failure of the status line or headers; its text quotes the bytes received, so not here.
            return HealthStatus.DEGRADED, Reason.BAD_RESPONSE, "unexpected response: not a valid HTTP response"
        case BodyTooLarge() | aiohttp.ContentTypeError() | ValueError():
            return HealthStatus.DEGRADED, Reason.BAD_RESPONSE, f"unexpected response: {exc}"
        case _:  # the text of an unforeseen exception may quote what the server sent: only its type leaves
            return HealthStatus.UNREACHABLE, Reason.ERROR, f"unexpected {type(exc).__name__} in the check"


class Runner:
    """Runs checks with a per-check deadline. Holds the tasks it had to abandon so none is lost unawaited."""

    def __init__(self, adapters: Mapping[str, AdapterFactory], ctx: AdapterContext, *,
                 timeout: float = DEFAULT_TIMEOUT_S, limiter: asyncio.Semaphore | None = None) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.adapters, self.ctx, self.timeout, self.limiter = adapters, ctx, timeout, limiter
        self.abandoned: set[asyncio.Task[HealthResult]] = set()

    async def run(self, integrations: Sequence[Integration]) -> list[IntegrationResult]:
        """Check all concurrently, like Promise.allSettled: one failure never aborts the others."""
        results = await asyncio.gather(*(self._run_one(i) for i in integrations))
        return [IntegrationResult(i.org_id, i.integration_type, r) for i, r in zip(integrations, results, strict=True)]

    async def _run_one(self, integration: Integration) -> HealthResult:
        factory = self.adapters.get(integration.integration_type)
        if factory is None:
            return self._failure(0, (HealthStatus.UNREACHABLE, Reason.INVALID_CONFIG,
                                     f"invalid configuration: no adapter for {integration.integration_type!r}"))
        try:
            config = parse_config(integration)
        except InvalidConfig as exc:
            return self._failure(0, describe_exception(exc))
        async with self.limiter or contextlib.nullcontext():
            return await self._check_with_deadline(factory, integration.org_id, config)

    async def _check_with_deadline(self, factory: AdapterFactory, org_id: UUID, config: object) -> HealthResult:
        start = self.ctx.monotonic()
        task = asyncio.ensure_future(self._call(factory, org_id, config))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        elapsed_ms = (self.ctx.monotonic() - start) * 1000
        if not done:
            # Cancel, but do not wait: a check that swallows cancellation must not hold up the others.
            task.cancel()
            self.abandoned.add(task)
            task.add_done_callback(self._forget)
            return self._failure(self.timeout * 1000, (HealthStatus.UNREACHABLE, Reason.TIMEOUT,
                                                        f"timed out after {self.timeout:g} s"))
        exc = task.exception()
        if exc is not None:
            return self._failure(elapsed_ms, describe_exception(exc))
        result = task.result()
        if not isinstance(result, HealthResult):
            return self._failure(elapsed_ms, (HealthStatus.UNREACHABLE, Reason.ERROR,
                                              f"adapter returned {type(result).__name__}, not a HealthResult"))
        return result

    async def _call(self, factory: AdapterFactory, org_id: UUID, config: object) -> HealthResult:
        return await factory(self.ctx).check(org_id, config)

    def _forget(self, task: asyncio.Task[HealthResult]) -> None:
        self.abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("abandoned check ended with %s", type(task.exception()).__name__)

    def _failure(self, latency_ms: float, failure: Failure) -> HealthResult:
        status, reason, message = failure
        return make_result(status, latency_ms, self.ctx.clock(), message, reason)


class ResultStore(Protocol):
    async def load_integrations(self, org_id: UUID | None = None) -> list[Integration]: ...

    async def persist(self, results: Sequence[IntegrationResult], slot: datetime) -> None: ...


async def run_health_checks(org_id: UUID, *, store: ResultStore, runner: Runner,
                            slot: datetime) -> list[IntegrationResult]:
    """Load an org's enabled integrations, check them all, persist status and history in one transaction."""
    integrations = await store.load_integrations(org_id)
    results = await runner.run(integrations)
    await store.persist(results, slot)
    return results
