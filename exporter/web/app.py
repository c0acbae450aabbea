"""The aiohttp application: routes, and the lifecycle that runs the scheduler and its helpers in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from exporter.engine import heap
from exporter.engine.leases import ShardLeases
from exporter.engine.loop_lag import LoopLagProbe
from exporter.engine.scheduler import Scheduler
from exporter.services import Services
from exporter.settings import Settings
from exporter.web import api, maintenance, subscriptions
from exporter.web.api import AUTHENTICATOR, EXPOSITION, RUNTIME, SERVICES, SETTINGS, Runtime
from exporter.web.auth import Authenticator
from exporter.web.jwks import JwksCache
from exporter.web.metrics import Exposition

log = logging.getLogger(__name__)
GRACE = web.AppKey("shutdown_grace_s", float)


async def background(app: web.Application) -> AsyncIterator[None]:
    """Restore the last known status, then run the scheduler, the outbox's retries, the lease renewal, the
    warm-ups and the webhook deliveries; on exit stop scheduling, let the running cycle finish and flush what is queued."""
    services, runtime = app[SERVICES], app[RUNTIME]
    if services.shards:  # renewing first: a slow restore must not let the leases taken at start lapse
        runtime.lease_task = asyncio.create_task(renew_forever(services.shards, services.scheduler))
    heap.configure()
    restored = await services.store.last_results()
    services.scheduler.restore(restored)
    log.info("restored the last known status of %d integrations", len(restored))
    heap.settle()  # what startup built and restored is long-lived: no full collection need walk it again
    runtime.loop_task = asyncio.create_task(services.scheduler.run_forever(runtime.stop, between=heap.settle))
    retry_task = asyncio.create_task(services.outbox.retry_forever())
    if services.warmer:  # its own task: a cycle never waits for a warm-up, nor a warm-up for a cycle
        runtime.warmup_task = asyncio.create_task(services.warmer.run_forever(runtime.stop))
    if services.notifier:  # off the cycle: receivers never hold up a check
        runtime.notifier_task = asyncio.create_task(services.notifier.run_forever(runtime.stop))
    yield
    # in-flight webhook deliveries stay pending in the outbox, retried after their lease
    for task in (runtime.notifier_task, runtime.lease_task, runtime.warmup_task):
        if task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await shutdown(services, runtime, retry_task, grace_s=app[GRACE])


async def watch_loop_lag(app: web.Application) -> AsyncIterator[None]:
    """Measure the event loop's lag while the app runs (integration_health_event_loop_lag_seconds)."""
    runtime = app[RUNTIME]
    runtime.lag_task = asyncio.create_task(LoopLagProbe(app[SERVICES].instruments.loop_lag).run_forever())
    yield
    runtime.lag_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runtime.lag_task


async def keep_exposition_fresh(app: web.Application) -> AsyncIterator[None]:
    """Format what a cycle changed soon after it publishes (in a thread), not when Prometheus scrapes."""
    task = asyncio.create_task(app[EXPOSITION].keep_fresh())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def stop_scheduling(app: web.Application) -> None:
    """On shutdown, before aiohttp drains open requests (up to a minute): no new cycle may start meanwhile."""
    app[RUNTIME].stop.set()


async def renew_forever(shards: ShardLeases, scheduler: Scheduler) -> None:
    """Renew (and rebalance) the leases every third of their TTL, between cycles too; shards gained
    here are taken over at once, not at the next slot."""
    while True:
        await asyncio.sleep(shards.ttl_s / 3)
        before = shards.owned
        try:  # the lease loop must outlive any one failure (a read-only transaction in a failover, say)
            gained = await shards.maintain() - before
            await scheduler.take_over(gained)
        except Exception:
            log.exception("renewing or taking over shards failed; trying again in %.0f s", shards.ttl_s / 3)


async def shutdown(services: Services, runtime: Runtime, retry_task: asyncio.Task[None], grace_s: float) -> None:
    """Stop scheduling, let an in-flight cycle finish (its checks are cut at their timeout), flush."""
    runtime.stop.set()
    if runtime.loop_task:
        runtime.loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runtime.loop_task
    cycle = services.scheduler.cycle_task
    if cycle and not cycle.done():
        log.info("waiting for the running cycle to finish (at most %.0f s)", grace_s)
        try:
            await asyncio.wait_for(asyncio.shield(cycle), grace_s)
        except TimeoutError:  # past the grace: stop it, so nothing outlives the pool and the session
            cycle.cancel()
            with contextlib.suppress(BaseException):
                await cycle
        except Exception:
            pass  # the cycle's own failure was logged where it happened
    retry_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await retry_task
    try:
        async with asyncio.timeout(grace_s):  # a database that stopped answering must not hold the exit
            flushed = await services.outbox.flush()
    except TimeoutError:
        flushed = False
    await services.outbox.close()  # a write still running past the grace is cut: the pool closes next
    if not flushed:
        log.error("exiting with %d results not written: the database is unreachable", services.outbox.pending)


def create_app(settings: Settings, services: Services, *, shutdown_grace_s: float | None = None,
               jwks: JwksCache | None = None) -> web.Application:
    """Serve `services`; the background lifecycle starts when the app does and stops before it closes.

    On shutdown a running cycle gets `shutdown_grace_s` to finish (default: the check timeout + 5 s).
    `jwks` (default: one for EXPORTER_JWT_JWKS_URL, when set) holds the app JWTs' keys; the app closes it."""
    app = web.Application(middlewares=[api.errors_as_json, api.bearer_auth])
    app[GRACE] = settings.check_timeout_seconds + 5 if shutdown_grace_s is None else shutdown_grace_s
    app[SETTINGS], app[SERVICES], app[RUNTIME] = settings, services, Runtime()
    if jwks is None and settings.jwt_jwks_url:
        jwks = JwksCache(settings.jwt_jwks_url)
    app[AUTHENTICATOR] = Authenticator.from_settings(settings, jwks)
    if jwks is not None:
        app.on_cleanup.append(lambda _: jwks.close())
    app[EXPOSITION] = Exposition(services.instruments, services.snapshot, clock=services.scheduler.clock)
    app.cleanup_ctx.append(watch_loop_lag)
    app.cleanup_ctx.append(background)
    app.cleanup_ctx.append(keep_exposition_fresh)
    app.on_shutdown.append(stop_scheduling)
    app.router.add_get("/metrics", api.get_metrics)
    app.router.add_get("/healthz", api.healthz)
    app.router.add_get("/readyz", api.readyz)
    app.router.add_get("/api/v1/openapi.json", api.openapi)
    app.router.add_get("/api/v1/orgs/{org_id}/health", api.get_health)
    app.router.add_get("/api/v1/orgs/{org_id}/health/history", api.get_history)
    app.router.add_post("/api/v1/orgs/{org_id}/checks", api.post_checks)
    app.router.add_post("/api/v1/sync-runs", api.post_sync_run)
    app.router.add_post("/api/v1/orgs/{org_id}/webhooks", subscriptions.post_webhook)
    app.router.add_get("/api/v1/orgs/{org_id}/webhooks", subscriptions.get_webhooks)
    app.router.add_delete("/api/v1/orgs/{org_id}/webhooks/{subscription_id}", subscriptions.delete_webhook)
    app.router.add_post("/api/v1/maintenance", maintenance.post_window)
    app.router.add_get("/api/v1/maintenance", maintenance.get_windows)
    app.router.add_delete("/api/v1/maintenance/{window_id}", maintenance.delete_window)
    return app
