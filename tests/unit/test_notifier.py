"""The delivery worker's loop without a database: it outlives outbox errors, and refuses a session that
enforces no egress policy (a webhook URL is tenant input)."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from exporter.engine.instruments import Instruments
from exporter.engine.notifier import Notifier
from exporter.storage.webhooks import Claimed
from tests.helpers import wait_until
from tests.support.fakes import loopback_session
from tests.support.receiver import Receiver


class FlakyOutbox:
    """An outbox whose first claims fail as a database in trouble would; then it hands out one delivery."""

    keyring = None  # no secrets to seal at start

    def __init__(self, delivery: Claimed, failures: list[BaseException]) -> None:
        self.delivery, self.failures = delivery, failures
        self.settled: list[tuple[str, str | None]] = []

    async def claim(self, limit: int, lease_s: float) -> list[Claimed]:
        if self.failures:
            raise self.failures.pop(0)
        delivery, self.delivery = self.delivery, None
        return [delivery] if delivery else []

    async def settle(self, claimed: Claimed, status: str, retry_in_s: float = 0.0, error: str | None = None) -> None:
        self.settled.append((status, error))

    async def pending(self) -> int:
        raise OSError("the outbox is away")  # housekeeping fails too; the loop goes on

    async def prune(self, keep_s: float, limit: int = 1000) -> int:
        return 0


async def run_until_settled(outbox: FlakyOutbox) -> None:
    """Run the worker over `outbox` until it has recorded an outcome, then stop it."""
    stop = asyncio.Event()
    async with loopback_session() as session:
        instruments = Instruments(CollectorRegistry(), "test")
        notifier = Notifier(outbox, session, instruments, poll_s=0.01)  # type: ignore[arg-type]
        worker = asyncio.create_task(notifier.run_forever(stop))
        await wait_until(lambda: outbox.settled, what="an outcome")
        stop.set()
        await asyncio.wait_for(worker, 10)


async def test_the_worker_outlives_outbox_errors_and_then_delivers(aiohttp_server) -> None:
    receiver = Receiver(secret="whsec_" + "k" * 40)
    url = str((await aiohttp_server(receiver.app(), access_log=None)).make_url("/hook"))
    outbox = FlakyOutbox(Claimed(uuid4(), uuid4(), uuid4(), "integration.status_changed", {"id": "x"}, 1, url,
                                 receiver.secret), [OSError("connection reset"), RuntimeError("read-only transaction")])
    await run_until_settled(outbox)
    assert outbox.settled == [("delivered", None)] and len(receiver.accepted) == 1


def test_a_claimed_delivery_never_shows_its_url_or_secret_in_a_log_or_traceback() -> None:
    text = repr(Claimed(uuid4(), uuid4(), uuid4(), "t", {}, 1, "https://hooks.example.com/T0/capability", "s3cr3t"))
    assert "capability" not in text and "s3cr3t" not in text and "attempts=1" in text


async def test_a_session_without_the_egress_policy_is_refused() -> None:
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(ValueError, match="must enforce the egress policy"):
            Notifier(None, plain, Instruments(CollectorRegistry(), "test"))  # type: ignore[arg-type]
    async with loopback_session() as session:
        with pytest.raises(ValueError, match="must be > 0"):
            Notifier(None, session, Instruments(CollectorRegistry(), "test"), timeout_s=0)  # type: ignore[arg-type]


class UnsealedOutbox(FlakyOutbox):
    """An outbox whose start-up sealing fails (the database away at start); its deliveries still go out."""

    keyring = object()  # a keyring is configured

    async def reseal(self) -> None:
        raise OSError("connection refused")


async def test_sealing_secrets_at_start_may_fail_and_the_worker_still_delivers(aiohttp_server, caplog) -> None:
    receiver = Receiver(secret="whsec_" + "k" * 40)
    url = str((await aiohttp_server(receiver.app(), access_log=None)).make_url("/hook"))
    outbox = UnsealedOutbox(Claimed(uuid4(), uuid4(), uuid4(), "vendor.incident", {"id": "x"}, 1, url,
                                    receiver.secret), [])
    await run_until_settled(outbox)
    assert outbox.settled == [("delivered", None)] and len(receiver.accepted) == 1
    assert "sealing webhook secrets failed (OSError); the next start tries again" in caplog.text
