"""The webhook delivery worker: claims due deliveries from the outbox, POSTs them signed, records the outcome.

It runs beside the scheduler, never inside a cycle: a cycle only writes outbox rows (in its own
transaction), so a slow, failing or hanging receiver costs the cycle nothing. Every request has its own
deadline; at-least-once: a row is marked delivered only after a 2xx, and receivers dedupe by Webhook-Id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable

from exporter.adapters.base import AdapterContext
from exporter.adapters.client import HttpClient
from exporter.adapters.transport import fetch
from exporter.core.egress import Blocked, EgressPolicy
from exporter.core.sanitize import sanitize
from exporter.core.webhooks import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadWebhookUrl,
    RetrySchedule,
    delivered,
    destination,
    signature,
)
from exporter.engine.instruments import Instruments
from exporter.storage.store import TRANSIENT_ERRORS
from exporter.storage.webhooks import Claimed, Webhooks

log = logging.getLogger(__name__)
LEASE_MARGIN_S = 30.0  # a claimed row is not due again until its request's deadline has long passed
PRUNE_EVERY_S = 3600.0
HOLD_S = 60.0  # a delivery whose secret will not open is looked at again this often, until the keys are fixed
HOLD_LOG_EVERY_S = 300.0  # and said in the log at most this often (the alert and the counter say the rest)


def body_of(claimed: Claimed) -> bytes:
    """The exact bytes sent and signed: the event as compact JSON."""
    return json.dumps(claimed.payload, separators=(",", ":"), sort_keys=True).encode()


class Notifier:
    """Delivers the outbox, `concurrency` requests at once (claimed `batch` at most at a time), on its own HTTP
    session, so hanging receivers can hold only its connections, never the checks'."""

    def __init__(self, webhooks: Webhooks, session: HttpClient, instruments: Instruments, *,
                 schedule: RetrySchedule = RetrySchedule(), timeout_s: float = 10.0, batch: int = 100,
                 concurrency: int = 16, poll_s: float = 1.0, keep_s: float = 7 * 86400.0,
                 lease_margin_s: float = LEASE_MARGIN_S, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random) -> None:
        if timeout_s <= 0 or batch <= 0 or concurrency <= 0 or poll_s <= 0:
            raise ValueError("timeout_s, batch, concurrency and poll_s must be > 0")
        if not isinstance(session, HttpClient):
            raise ValueError("the webhook session must enforce the egress policy: build it with transport.make_session")
        self.policy: EgressPolicy = session.policy
        self.webhooks, self.instruments, self.schedule = webhooks, instruments, schedule
        self.ctx = AdapterContext(session=session)
        self.timeout_s, self.batch, self.poll_s, self.keep_s = timeout_s, batch, poll_s, keep_s
        self.clock, self.rng, self.lease_s = clock, rng, timeout_s + lease_margin_s
        self.concurrency = concurrency
        self._pruned_at = self._counted_at = self._held_logged_at = float("-inf")
        self._started_at = time.monotonic()

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` (or cancelled: in-flight deliveries stay pending, retried after their lease).

        Each delivery is a task of its own, and a free slot is refilled as soon as one finishes: a receiver
        that hangs until its timeout holds one slot, never a whole round of other organisations' deliveries.
        Idle, or after a database error, it asks again every `poll_s`.
        """
        await self.reseal()
        in_flight: set[asyncio.Task[None]] = set()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                claimed = await self._claim(self.concurrency - len(in_flight))
                for c in claimed:
                    task = asyncio.create_task(self._deliver_counted(c))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                # refill in bites of a quarter of the slots, not one claim per finished delivery
                full = len(in_flight) > self.concurrency - max(1, self.concurrency // 4)
                if full or not claimed:  # wait for free slots, or for work to come due
                    await asyncio.wait({*in_flight, stopping} if full else {stopping},
                                       timeout=None if full else self.poll_s, return_when=asyncio.FIRST_COMPLETED)
                await self._housekeeping()
        finally:
            stopping.cancel()
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, stopping, return_exceptions=True)

    async def reseal(self) -> None:
        """Before the first delivery, and hourly: seal the plaintext secrets of migration 0014 and move secrets to
        the current key (every replica may; they split the rows). A failure is logged and the worker goes on: a
        plaintext row still signs, and a row under an older configured key still opens."""
        if self.webhooks.keyring is None:
            return
        try:
            done = await self.webhooks.reseal()
        except Exception as exc:  # the database may be away: the next hourly housekeeping tries again
            log.warning("sealing webhook secrets failed (%s); tried again within the hour", type(exc).__name__)
            return
        if done.sealed or done.rekeyed:
            log.info("webhook secrets: %d plaintext sealed, %d moved to key %r", done.sealed, done.rekeyed,
                     self.webhooks.keyring.current)
        if done.left:
            log.warning("webhook secrets left under keys this process does not seal with: %s (a key that is not in "
                        "EXPORTER_WEBHOOK_SECRET_KEYS holds their deliveries)", done.left)

    async def _claim(self, free: int) -> list[Claimed]:
        if free <= 0:
            return []
        try:
            return await self.webhooks.claim(min(free, self.batch), self.lease_s)
        except TRANSIENT_ERRORS as exc:
            log.warning("webhook outbox unreachable (%s); trying again in %.0f s", type(exc).__name__, self.poll_s)
        except Exception:  # the worker must outlive any one failure (a read-only database in a failover, say)
            log.exception("claiming webhook deliveries failed; trying again in %.0f s", self.poll_s)
        return []

    async def _housekeeping(self) -> None:
        """Every `poll_s` at most: refresh the pending gauge; every hour, prune finished deliveries and seal what
        is left in plaintext (a replica of the old version still writing during a rolling upgrade)."""
        now = time.monotonic()
        if now - self._counted_at < self.poll_s:
            return
        self._counted_at = now
        try:
            self.instruments.webhook_pending.set(await self.webhooks.pending())
            if now - self._pruned_at > PRUNE_EVERY_S:
                self._pruned_at = now
                await self.webhooks.prune(self.keep_s)
                if now > self._started_at + PRUNE_EVERY_S:  # run_forever sealed at start
                    await self.reseal()
        except TRANSIENT_ERRORS as exc:
            log.warning("webhook outbox unreachable (%s)", type(exc).__name__)
        except Exception:
            log.exception("webhook outbox housekeeping failed")

    async def run_once(self) -> int:
        """One round: claim up to `batch` due deliveries, deliver them (`concurrency` at once), record each
        outcome and the pending count; returns how many were claimed."""
        claimed = await self.webhooks.claim(self.batch, self.lease_s)
        limit = asyncio.Semaphore(self.concurrency)

        async def limited(c: Claimed) -> None:
            async with limit:
                await self._deliver_counted(c)
        await asyncio.gather(*(limited(c) for c in claimed))
        self._counted_at = float("-inf")
        await self._housekeeping()
        return len(claimed)

    async def _deliver_counted(self, claimed: Claimed) -> None:
        try:
            outcome = await self.deliver(claimed)
        except Exception as exc:  # the outcome could not be recorded: the delivery is retried after its lease
            log.warning("could not record a webhook delivery (%s)", type(exc).__name__,
                        extra={"event_id": str(claimed.event_id), "subscription_id": str(claimed.subscription_id)})
            return
        self.instruments.webhook_deliveries.labels(outcome).inc()

    async def deliver(self, claimed: Claimed) -> str:
        """One attempt; returns its outcome (delivered, failed, dead, blocked, held) after recording it."""
        context = {"event_id": str(claimed.event_id), "subscription_id": str(claimed.subscription_id),
                   "org_id": str(claimed.org_id), "attempt": claimed.attempts}
        if not claimed.secret:  # unopened (or, never expected, empty): nothing is signed with an empty key
            return await self._hold(claimed, context)
        try:
            error = await self._post(claimed)
        except (Blocked, BadWebhookUrl) as exc:  # the destination is refused: never retried, nothing was sent
            log.warning("webhook destination refused: %s", exc, extra=context)
            await self.webhooks.settle(claimed, "dead", error=sanitize(f"blocked: {exc}"))
            return "blocked"
        if error is None:
            await self.webhooks.settle(claimed, "delivered")
            log.info("webhook delivered", extra=context)
            return "delivered"
        if self.schedule.gives_up_after(claimed.attempts):
            await self.webhooks.settle(claimed, "dead", error=error)
            log.warning("webhook dead after %d attempts: %s", claimed.attempts, error, extra=context)
            return "dead"
        delay = self.schedule.delay_s(claimed.attempts, self.rng)
        await self.webhooks.settle(claimed, "pending", retry_in_s=delay, error=error)
        log.info("webhook attempt failed (%s); next in %.0f s", error, delay, extra=context)
        return "failed"

    async def _hold(self, claimed: Claimed, context: dict[str, object]) -> str:
        """Nothing can be signed without the secret: hold the delivery, uncounted, rather than dead-letter an
        organisation's events for an operator's key mistake. The reason names the key id, never a key."""
        why = claimed.unsealable or "the signing secret could not be opened"
        # the organisation reads last_error (RLS): it learns its delivery waits on the operator, not the key names
        await self.webhooks.hold(claimed, HOLD_S, "held: the operator must restore the key that signs this "
                                 "subscription; deliveries resume then, nothing is lost")
        now = time.monotonic()
        if now - self._held_logged_at >= HOLD_LOG_EVERY_S:
            self._held_logged_at = now
            log.error("webhook deliveries held: %s", why, extra=context)
        return "held"

    async def _post(self, claimed: Claimed) -> str | None:
        """POST the signed event; None when delivered, else why not (sanitised, never the URL or secret)."""
        if not claimed.secret:  # deliver() holds these; signing with an empty HMAC key would be forgeable
            raise RuntimeError("a webhook delivery reached signing without its secret")
        destination(claimed.url, self.policy)  # the policy may have changed since the subscription was made
        body = body_of(claimed)
        now = int(self.clock())
        headers = {"Content-Type": "application/json", "User-Agent": "integration-health-webhooks/1",
                   ID_HEADER: str(claimed.event_id), TIMESTAMP_HEADER: str(now),
                   SIGNATURE_HEADER: signature(claimed.secret, now, body)}
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await fetch(self.ctx, "POST", claimed.url, data=body, headers=headers, read_body=False)
        except Blocked:
            raise
        except TimeoutError:
            return f"timed out after {self.timeout_s:g} s"
        except Exception as exc:  # connection refused, reset, TLS: the type says enough, the text may hold the URL
            return f"request failed: {type(exc).__name__}"
        return None if delivered(response.status) else f"HTTP {response.status}"
