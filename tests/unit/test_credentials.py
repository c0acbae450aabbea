"""Credential providers: one directory per organisation, refusals that all read the same, a cache keyed by
organisation and reference that forgets on demand."""

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import SecretStr

from exporter.core.model import (
    CREDENTIAL_REFUSED,
    CredentialError,
    CredentialUnavailable,
    Integration,
    Reason,
    secret_name,
)
from exporter.services import build_services, credentials_ahead
from exporter.storage.credentials import REFUSED, CachedCredentials, DirectoryCredentials, Stored
from tests.helpers import settings_for
from tests.support.fakes import StaticCredentials, loopback_session
from tests.support.memory_store import MemoryStore

ORG_A = UUID("aaaaaaaa-0000-4000-8000-00000000000a")
ORG_B = UUID("bbbbbbbb-0000-4000-8000-00000000000b")
SLOT = datetime(2026, 11, 22, tzinfo=UTC)


def plant(root: Path, org: UUID, ref: str, secret: str) -> None:
    (root / str(org)).mkdir(exist_ok=True)
    (root / str(org) / ref).write_text(secret + "\n")


async def test_directory_provider_reads_the_orgs_own_file(tmp_path: Path) -> None:
    """`<dir>/<org_id>/<ref>`, trailing newline trimmed, never shown by repr."""
    plant(tmp_path, ORG_A, "xledger", "tok-123")
    secret = await DirectoryCredentials(tmp_path).get(ORG_A, "xledger")
    assert secret.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(secret)


@pytest.mark.parametrize("ref", [
    "xledger",  # A's file name, from B
    f"../{ORG_A}/xledger",  # a path out of B's directory into A's
    f"{ORG_A}/xledger",  # A's id as a prefix
    "../../etc/passwd", "/etc/passwd", "a/b", "", ".hidden", "..", "x\x00y", "ß" * 3, "x" * 129,
])
async def test_directory_provider_refuses_another_orgs_file_and_paths_alike(tmp_path: Path, ref: str) -> None:
    """Every refusal is the missing-secret message, so B learns nothing about what A has."""
    plant(tmp_path, ORG_A, "xledger", "tok-A")
    (tmp_path / str(ORG_B)).mkdir()
    with pytest.raises(CredentialError) as refused:
        await DirectoryCredentials(tmp_path).get(ORG_B, ref)
    with pytest.raises(CredentialError) as missing:
        await DirectoryCredentials(tmp_path).get(ORG_B, "nope")
    assert str(refused.value) == str(missing.value) == CREDENTIAL_REFUSED
    assert "tok-A" not in str(refused.value)


async def test_directory_provider_refuses_an_org_without_a_directory(tmp_path: Path) -> None:
    """An organisation nobody gave secrets to has none, not someone else's."""
    plant(tmp_path, ORG_A, "xledger", "tok-A")
    with pytest.raises(CredentialError, match=CREDENTIAL_REFUSED):
        await DirectoryCredentials(tmp_path).get(ORG_B, "xledger")


def test_secret_names_carry_the_org_and_refuse_paths() -> None:
    """The convention has one definition; a ref that is not a plain name cannot build one."""
    assert secret_name(ORG_A, "xledger") == f"{ORG_A}/xledger"
    for bad in ("../x", f"{ORG_B}/x", ""):
        with pytest.raises(ValueError, match="plain name"):
            secret_name(ORG_A, bad)


async def test_cache_serves_until_ttl_then_rereads_a_rotated_secret() -> None:
    """The TTL still bounds how long a rotation takes when nothing was refused."""
    now = [0.0]
    inner = StaticCredentials({"k": "old"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: now[0])
    assert (await cached.get(ORG_A, "k")).get_secret_value() == "old"
    inner.set("k", "new")
    now[0] = 299
    assert (await cached.get(ORG_A, "k")).get_secret_value() == "old"
    now[0] = 301
    assert (await cached.get(ORG_A, "k")).get_secret_value() == "new"


async def test_cache_never_serves_one_orgs_secret_to_another(tmp_path: Path) -> None:
    """Keyed by (org, ref): A's cached `xledger` is not B's `xledger`."""
    plant(tmp_path, ORG_A, "xledger", "tok-A")
    cached = CachedCredentials(DirectoryCredentials(tmp_path), ttl=300)
    assert (await cached.get(ORG_A, "xledger")).get_secret_value() == "tok-A"
    with pytest.raises(CredentialError, match=CREDENTIAL_REFUSED):
        await cached.get(ORG_B, "xledger")


async def test_forget_drops_a_cached_secret_so_the_next_read_sees_the_rotation(tmp_path: Path) -> None:
    """After a vendor refused a secret, the next check reads the store, not the TTL cache."""
    plant(tmp_path, ORG_A, "fiken", "old")
    cached = CachedCredentials(DirectoryCredentials(tmp_path), ttl=300, monotonic=lambda: 0.0)
    assert (await cached.get(ORG_A, "fiken")).get_secret_value() == "old"
    plant(tmp_path, ORG_A, "fiken", "new")
    assert (await cached.get(ORG_A, "fiken")).get_secret_value() == "old"
    cached.forget(ORG_B, "fiken")  # another org's forget leaves A's entry alone
    assert (await cached.get(ORG_A, "fiken")).get_secret_value() == "old"
    cached.forget(ORG_A, "fiken")
    assert (await cached.get(ORG_A, "fiken")).get_secret_value() == "new"


def test_negative_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl must be >= 0"):
        CachedCredentials(StaticCredentials({}), ttl=-1)


class Flaky:
    """A provider whose store can go away (CredentialUnavailable) while it still knows its secrets."""

    def __init__(self) -> None:
        self.down, self.reads = False, 0

    async def get(self, org_id, ref) -> SecretStr:
        self.reads += 1
        if self.down:
            raise CredentialUnavailable("vault lookup failed: ConnectionRefusedError")
        return SecretStr(f"secret-of-{ref}")

    def forget(self, org_id, ref) -> None:
        pass


async def test_an_unavailable_store_serves_the_last_secret_for_a_bounded_time_then_says_unavailable() -> None:
    now = [0.0]
    inner, org = Flaky(), UUID("77777777-7777-4777-8777-777777777777")
    cached = CachedCredentials(inner, ttl=300, stale_s=3600, monotonic=lambda: now[0])
    assert (await cached.get(org, "a")).get_secret_value() == "secret-of-a"
    inner.down, now[0] = True, 1000.0  # past the cache time, within the stale window
    assert (await cached.get(org, "a")).get_secret_value() == "secret-of-a"
    with pytest.raises(CredentialUnavailable):
        await cached.get(org, "never-read")  # nothing known to fall back on
    now[0] = 300 + 3600 + 1.0
    with pytest.raises(CredentialUnavailable):
        await cached.get(org, "a")
    assert inner.reads == 4, "the store is asked each time: it is used again as soon as it answers"


class Batched:
    """A store that answers many pairs a call (ReadsMany), counting calls; `down` makes it unavailable, `hang`
    makes it never answer. Secrets are `secret-of-<ref>` for the refs it holds, each expiring at END."""

    def __init__(self, refs: set[str], batch_size: int = 2) -> None:
        self.refs, self.batch_size = refs, batch_size
        self.batches: list[list[tuple[UUID, str]]] = []
        self.reads = 0
        self.down = self.hang = False

    async def read_many(self, keys):
        self.batches.append(list(keys))
        if self.hang:
            await asyncio.sleep(3600)
        if self.down:
            raise CredentialUnavailable("vault lookup failed: ConnectionRefusedError")
        return {k: Stored(SecretStr(f"secret-of-{k[1]}"), END) if k[1] in self.refs else REFUSED for k in keys}

    async def get(self, org_id, ref) -> SecretStr:
        self.reads += 1
        if self.down:
            raise CredentialUnavailable("vault lookup failed: ConnectionRefusedError")
        if ref not in self.refs:
            raise CredentialError(CREDENTIAL_REFUSED)
        return SecretStr(f"secret-of-{ref}")

    async def expiry(self, org_id, ref):
        self.reads += 1
        return END if ref in self.refs else None

    def forget(self, org_id, ref) -> None:
        pass


END = datetime(2027, 5, 1, tzinfo=UTC)


async def test_a_prefetch_reads_in_batches_and_the_checks_then_read_nothing() -> None:
    inner = Batched({"a", "b", "c"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0)
    keys = [(ORG_A, "a"), (ORG_A, "b"), (ORG_B, "c"), (ORG_A, "a")]  # a duplicate is read once
    await cached.prefetch(keys)
    assert inner.batches == [[(ORG_A, "a"), (ORG_A, "b")], [(ORG_B, "c")]]
    for org, ref in keys:
        assert (await cached.get(org, ref)).get_secret_value() == f"secret-of-{ref}"
        assert await cached.expiry(org, ref) == END
    assert inner.reads == 0


async def test_a_prefetch_rereads_only_what_has_less_than_half_its_ttl_left() -> None:
    now = [0.0]
    inner = Batched({"a", "b"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: now[0])
    await cached.prefetch([(ORG_A, "a")])
    now[0] = 100.0
    await cached.get(ORG_A, "b")  # a single read (a run-now): its expiry is not cached yet
    await cached.prefetch([(ORG_A, "a"), (ORG_A, "b")])
    assert inner.batches[1:] == [[(ORG_A, "b")]], "a: 200 s of 300 left; b: no expiry cached"
    now[0] = 151.0
    await cached.prefetch([(ORG_A, "a"), (ORG_A, "b")])
    assert inner.batches[2:] == [[(ORG_A, "a")]], "a: 149 s left; b: read at 100, 249 s left"


async def test_a_secret_read_again_unchanged_stays_the_object_held_and_a_rotated_one_replaces_it() -> None:
    """The copy each read makes would live until the next cycle for the full collection to walk (engine/heap.py)."""
    now = [0.0]
    inner = Batched({"a"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: now[0])
    await cached.prefetch([(ORG_A, "a")])
    held = await cached.get(ORG_A, "a")
    now[0] = 200.0
    await cached.prefetch([(ORG_A, "a")])
    assert len(inner.batches) == 2 and await cached.get(ORG_A, "a") is held
    inner.read_many = lambda keys: asyncio.sleep(0, {k: Stored(SecretStr("rotated"), END) for k in keys})
    now[0] = 400.0
    await cached.prefetch([(ORG_A, "a")])
    assert (await cached.get(ORG_A, "a")).get_secret_value() == "rotated"


async def test_a_prefetched_refusal_is_answered_once_then_the_store_is_asked_again() -> None:
    """A secret added after the prefetch counts on the next get (a run-now after the admin fixed it)."""
    inner = Batched({"a"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0)
    await cached.prefetch([(ORG_A, "missing")])
    with pytest.raises(CredentialError, match=CREDENTIAL_REFUSED):
        await cached.get(ORG_A, "missing")
    assert inner.reads == 0
    inner.refs.add("missing")
    assert (await cached.get(ORG_A, "missing")).get_secret_value() == "secret-of-missing"
    assert inner.reads == 1


async def test_forget_after_a_prefetch_makes_the_next_get_read_the_store() -> None:
    inner = Batched({"a"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0)
    await cached.prefetch([(ORG_A, "a")])
    cached.forget(ORG_A, "a")  # the vendor refused it
    await cached.get(ORG_A, "a")
    assert inner.reads == 1


@pytest.mark.parametrize("failure", ["down", "hang"])
async def test_a_failing_batch_is_an_outage_the_last_secrets_serve_and_later_batches_wait(failure, caplog) -> None:
    now = [0.0]
    inner = Batched({"a", "b", "c"}, batch_size=1)
    cached = CachedCredentials(inner, ttl=300, stale_s=3600, monotonic=lambda: now[0], read_timeout_s=0.05)
    await cached.prefetch([(ORG_A, "a")])
    setattr(inner, failure, True)
    inner.down = True  # the single reads after it fail too
    now[0] = 1000.0
    with caplog.at_level(logging.WARNING):
        await cached.prefetch([(ORG_A, "a"), (ORG_A, "b"), (ORG_A, "c")])
        await cached.prefetch([(ORG_A, "a")])
    assert len(inner.batches) == 3, "one failed batch each time; the rest not tried"
    assert caplog.text.count("the credential store is unavailable") == 1
    assert (await cached.get(ORG_A, "a")).get_secret_value() == "secret-of-a"
    assert await cached.expiry(ORG_A, "a") == END
    with pytest.raises(CredentialUnavailable):
        await cached.get(ORG_A, "b")


async def test_without_batches_or_a_ttl_a_prefetch_reads_nothing() -> None:
    inner = Batched({"a"})
    await CachedCredentials(inner, ttl=0).prefetch([(ORG_A, "a")])
    await CachedCredentials(StaticCredentials({"a": "x"}), ttl=300).prefetch([(ORG_A, "a")])
    assert inner.batches == []


async def test_a_directory_is_not_read_ahead_each_check_reads_its_file(tmp_path: Path) -> None:
    """Files cost no round trip, and a cycle's read in one go would hold the event loop."""
    plant(tmp_path, ORG_A, "xledger", "old")
    cached = CachedCredentials(DirectoryCredentials(tmp_path), ttl=300, monotonic=lambda: 0.0)
    await cached.prefetch([(ORG_A, "xledger")])
    plant(tmp_path, ORG_A, "xledger", "new")
    assert (await cached.get(ORG_A, "xledger")).get_secret_value() == "new"


async def test_a_cycle_reads_its_credentials_ahead_in_batches_and_no_check_asks_alone(sim) -> None:
    """The wiring (services.credentials_ahead): before the checks start, one prefetch of the pairs about to be
    checked; the checks' secrets and expiries then come from the cache. A refused one is still forgotten."""
    _, base = sim
    orgs = [UUID(int=n) for n in range(1, 6)]
    store = MemoryStore([Integration(org, "http", {"url": f"{base}/http/t{n}", "method": "GET", "auth": "bearer"},
                                     "a" if n < 4 else "missing") for n, org in enumerate(orgs)]
                        + [Integration(ORG_A, "http", {"url": f"{base}/http/plain", "method": "GET"})])
    inner = Batched({"a"})
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0)
    async with loopback_session() as session:
        services = build_services(settings_for("postgresql://unused", check_interval=900), store=store,
                                  session=session, credentials=cached)  # type: ignore[arg-type]
        results = await services.scheduler.run_cycle(SLOT, SLOT)
    assert sorted(inner.batches) == sorted([[(orgs[0], "a"), (orgs[1], "a")], [(orgs[2], "a"), (orgs[3], "a")],
                                            [(orgs[4], "missing")]])
    assert inner.reads == 0, "no check asked the store on its own"
    assert {r.org_id: r.result.credential_expires_at for r in results if r.org_id in orgs[:4]} == \
        dict.fromkeys(orgs[:4], END)
    assert {r.org_id: r.result.reason for r in results}[orgs[4]] == Reason.AUTH
    with pytest.raises(CredentialError):
        await cached.get(orgs[4], "missing")
    assert inner.reads == 1, "the refusal was forgotten: the next check reads the store again"


async def test_a_read_ahead_that_breaks_fails_no_cycle_the_checks_read_their_own(sim, caplog) -> None:
    class Broken(StaticCredentials):
        async def prefetch(self, keys) -> None:
            raise RuntimeError("a bug in a provider")

    _, base = sim
    store = MemoryStore([Integration(ORG_A, "http", {"url": f"{base}/http/t", "method": "GET", "auth": "bearer"}, "a")])
    credentials = Broken({"a": "token"})
    async with loopback_session() as session:
        services = build_services(settings_for("postgresql://unused", check_interval=900), store=store,
                                  session=session, credentials=credentials)  # type: ignore[arg-type]
        with caplog.at_level(logging.ERROR):
            results = await services.scheduler.run_cycle(SLOT, SLOT)
    assert [r.result.status.value for r in results] == ["healthy"]
    assert credentials.reads == 1
    assert "reading the cycle's credentials ahead failed" in caplog.text


async def test_a_cycle_longer_than_the_ttl_keeps_its_credentials_read_ahead_until_its_checks_are_done() -> None:
    """At 100,000 under load a cycle takes minutes: the pairs are read ahead again while it runs (the cache
    re-reads those with less than half their TTL left), and no more once it is done."""
    now = [0.0]
    inner = Batched({"a", "b"}, batch_size=10)
    cached = CachedCredentials(inner, ttl=4, monotonic=lambda: now[0])
    ahead = credentials_ahead(cached, refresh_s=0.001)
    integrations = [Integration(ORG_A, "http", {}, "a"), Integration(ORG_A, "xledger", {}, "b"),
                    Integration(ORG_A, "fiken", {})]  # no reference: nothing to read
    async with ahead(integrations):
        assert inner.batches == [[(ORG_A, "a"), (ORG_A, "b")]]
        for t in (1.0, 2.0, 2.5, 3.0, 3.5, 4.5, 5.0, 6.0):  # the checks' clock moves on past the TTL
            now[0] = t
            await asyncio.sleep(0.01)  # the keeper's turns
            assert await cached.get(ORG_A, "a") == SecretStr("secret-of-a")
        assert inner.reads == 0, "no check had to ask the store on its own"
        assert len(inner.batches) >= 2, "read again while the cycle ran"
    asked = len(inner.batches)
    now[0] = 100.0
    await asyncio.sleep(0.02)
    assert len(inner.batches) == asked, "the keeper stops with the checks"


async def test_a_tenant_writing_new_references_cannot_grow_the_cache() -> None:
    """Refused references are not kept beyond their TTL and the stale allowance, references that are no plain
    name are never kept, and refusals keep no expiry (an attacker's megabyte refs, a run-now a minute)."""
    now = [0.0]
    inner = Batched({"a"}, batch_size=10)
    cached = CachedCredentials(inner, ttl=300, stale_s=3600, monotonic=lambda: now[0])
    for n in range(200):  # 200 minutes: well past the TTL and the stale allowance
        now[0] = n * 60.0
        await cached.prefetch([(ORG_A, "a"), (ORG_A, "x" * 1_000 + str(n)), (ORG_A, f"gone-{n}")])
        assert await cached.expiry(ORG_A, "y" * 1_000 + str(n)) is None
    held = set(cached._cache) | set(cached._expiries)
    assert all(len(ref) <= 128 for _, ref in held), "a reference no plain name was kept"
    assert all(ref == "a" for _, ref in cached._expiries), "an expiry kept for a refusal"
    assert len(held) <= 1 + (300 + 3600) // 60 + 1, f"{len(held)} keys held: stale refusals are never dropped"
    assert all(len(ref) <= 128 for batch in inner.batches for _, ref in batch), "a non-plain ref reached the store"


async def test_a_secret_forgotten_while_its_batch_is_read_is_not_put_back() -> None:
    """A vendor refused it (forget) while a prefetch was reading it: the batch's answer is older than that,
    so the next check reads the store again instead of using the refused secret for a whole TTL."""
    release = asyncio.Event()

    class Slow(Batched):
        async def read_many(self, keys):
            await release.wait()
            return await super().read_many(keys)

    inner = Slow({"a", "b"}, batch_size=10)
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0)
    reading = asyncio.create_task(cached.prefetch([(ORG_A, "a"), (ORG_A, "b")]))
    await asyncio.sleep(0)
    cached.forget(ORG_A, "a")
    release.set()
    await reading
    assert await cached.get(ORG_A, "b") == SecretStr("secret-of-b") and inner.reads == 0
    assert await cached.get(ORG_A, "a") == SecretStr("secret-of-a") and inner.reads == 1, \
        "the forgotten one was read again, not served from the batch"
    assert not cached._touched, "nothing noted once no prefetch runs"


async def test_a_cycle_cancelled_while_reading_ahead_stays_cancelled_and_stops_the_keeper() -> None:
    """Shutdown cancels a cycle past its grace: the read-ahead must neither swallow that (even while it waits
    for its keeper to let go of a read) nor leave the keeper running."""
    class SlowToLetGo(Batched):
        async def read_many(self, keys):
            self.batches.append(list(keys))
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # as a pooled connection being released
                raise

    inner = SlowToLetGo({"a"}, batch_size=10)
    cached = CachedCredentials(inner, ttl=4, read_timeout_s=3600, monotonic=lambda: 0.0)
    cached._cache[(ORG_A, "a")] = (10.0, SecretStr("x"))  # fresh: the first read is the keeper's
    cached._expiries[(ORG_A, "a")] = (10.0, None)
    ahead = credentials_ahead(cached, refresh_s=0.001)
    reading = asyncio.Event()

    async def cycle() -> str:
        async with ahead([Integration(ORG_A, "http", {}, "a")]):
            cached._cache[(ORG_A, "a")] = (0.0, SecretStr("x"))  # now due: the keeper reads
            while not inner.batches:
                await asyncio.sleep(0.001)
            reading.set()
        return "returned normally"  # the checks are done; leaving waits for the keeper

    task = asyncio.create_task(cycle())
    await reading.wait()
    await asyncio.sleep(0.01)  # inside the exit, waiting for the keeper
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    asked = len(inner.batches)
    await asyncio.sleep(0.02)
    assert len(inner.batches) == asked, "the keeper outlived the cycle"


async def test_a_refusal_is_not_read_again_until_its_entry_is_due() -> None:
    inner = Batched(set(), batch_size=10)
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0)
    await cached.prefetch([(ORG_A, "missing")])
    await cached.prefetch([(ORG_A, "missing")])
    assert inner.batches == [[(ORG_A, "missing")]], "a refusal re-read on every prefetch"


async def test_without_batch_reads_the_cache_still_drops_what_is_stale(tmp_path: Path) -> None:
    """DirectoryCredentials: a tenant's new references leave expiry entries; the cycle's prefetch drops them."""
    now = [0.0]
    cached = CachedCredentials(DirectoryCredentials(tmp_path), ttl=300, stale_s=600, monotonic=lambda: now[0])
    for n in range(100):
        now[0] = n * 60.0
        await cached.expiry(ORG_A, f"ref-{n}")
        await cached.prefetch([])
    assert len(cached._expiries) <= (300 + 600) // 60 + 1, len(cached._expiries)


class Gated(Batched):
    """Answers each batch only when the test releases it (one event per batch, in order)."""

    def __init__(self, refs: set[str], batch_size: int) -> None:
        super().__init__(refs, batch_size)
        self.gates = [asyncio.Event() for _ in range(10)]

    async def read_many(self, keys):
        await self.gates[len(self.batches)].wait()
        return await super().read_many(keys)


async def test_checks_start_after_the_first_pairs_and_a_later_one_waits_for_its_batch_not_asking_alone() -> None:
    """credentials_ahead reads the `first` pairs before the checks start, the rest while they run (at 100,000
    the 50 batches held every check back 3.3 s): a get of a pair whose batch is still being read waits for it."""
    inner = Gated({"a", "b", "c"}, batch_size=1)
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0)
    ahead = credentials_ahead(cached, refresh_s=0, first=1)
    integrations = [Integration(ORG_A, kind, {}, ref) for kind, ref in (("http", "a"), ("xledger", "b"),
                                                                       ("fiken", "c"))]
    inner.gates[0].set()
    async with ahead(integrations):
        assert inner.batches == [[(ORG_A, "a")]], "the checks start once the first pairs are read"
        waiting = asyncio.create_task(cached.get(ORG_A, "c"))  # a check that overtook its batch
        expiry = asyncio.create_task(cached.expiry(ORG_A, "c"))
        await asyncio.sleep(0.01)
        assert not waiting.done() and not expiry.done()
        inner.gates[1].set()
        inner.gates[2].set()
        assert await waiting == SecretStr("secret-of-c") and await expiry == END
        assert await cached.get(ORG_A, "b") == SecretStr("secret-of-b")
    assert inner.reads == 0, "no check asked the store alone"
    assert inner.batches == [[(ORG_A, "a")], [(ORG_A, "b")], [(ORG_A, "c")]]
    assert not cached._reading


async def test_a_get_waits_for_its_batch_at_most_the_read_timeout_then_asks_alone() -> None:
    """Its batch is queued behind a slow one that answers: the batch's own timeout starts after the get's wait,
    so what releases the get is the read timeout, while its batch is still being read."""
    inner = Gated({"a", "b"}, batch_size=1)
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0, read_timeout_s=0.2)
    asked, alone = [], inner.get

    async def asks_alone(org_id, ref):  # notes whether the pair's batch was still being read then
        asked.append((org_id, ref) in cached._reading)
        return await alone(org_id, ref)
    inner.get = asks_alone  # type: ignore[method-assign]
    reading = asyncio.create_task(cached.prefetch([(ORG_A, "b"), (ORG_A, "a")]))
    await asyncio.sleep(0)
    getting = asyncio.create_task(cached.get(ORG_A, "a"))  # "a" is the second batch's, behind "b"'s
    for _ in range(5):
        await asyncio.sleep(0)
    assert not getting.done() and inner.reads == 0, "it waits for its batch first"
    inner.gates[0].set()  # the first batch answers, late: the second starts now, after the get began to wait
    assert await getting == SecretStr("secret-of-a")
    assert asked == [True], "released by the read timeout, its batch still under way, not by the batch's end"
    assert inner.reads == 1, "asked alone, once"
    inner.gates[1].set()
    await reading
    assert not cached._reading and inner.batches[0] == [(ORG_A, "b")]


async def test_leaving_the_read_ahead_early_stops_the_later_batches_and_nobody_waits_for_them() -> None:
    inner = Gated({"a", "b"}, batch_size=1)
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0)
    inner.gates[0].set()
    async with credentials_ahead(cached, refresh_s=0, first=1)([Integration(ORG_A, "http", {}, "a"),
                                                                 Integration(ORG_A, "fiken", {}, "b")]):
        pass  # the checks were over before the second batch came
    assert not cached._reading
    assert await cached.get(ORG_A, "b") == SecretStr("secret-of-b") and inner.reads == 1


async def test_a_get_that_waited_out_its_batch_has_no_second_read_timeout_of_its_own() -> None:
    """The read sits inside the check's deadline: a wait for the batch and then a full read of its own would let
    a slow store take twice the read timeout from the vendor's answer. The wait uses the budget up, so the
    check's own read gets what is left (nothing): unavailable, although the store would have answered it."""
    inner = Gated({"a"}, batch_size=1)
    answered: list[str] = []

    async def slow_but_answering(org_id, ref):
        await asyncio.sleep(0.05)
        answered.append(ref)
        return SecretStr("secret-of-a")

    inner.get = slow_but_answering  # type: ignore[method-assign]
    cached = CachedCredentials(inner, ttl=300, monotonic=lambda: 0.0, read_timeout_s=0.2)
    reading = asyncio.create_task(cached.prefetch([(ORG_A, "a")]))  # its batch never answers (gated)
    await asyncio.sleep(0)
    with pytest.raises(CredentialUnavailable):
        await cached.get(ORG_A, "a")
    assert answered == [], "no second read after the batch's wait used the budget up"
    await reading
