"""Token and session caches are keyed by organisation, credential reference and secret: another org's token
is never reused, a rotated secret counts on the next check, a refused token or credential is dropped."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from uuid import UUID

from aiohttp import web

from exporter.adapters.base import AdapterContext
from exporter.adapters.tokens import TokenCache
from exporter.core.model import HealthStatus, Integration, Reason
from exporter.demo.simulator import FAKES
from exporter.storage.credentials import CachedCredentials, DirectoryCredentials
from tests.support.fakes import StaticCredentials, runner_for

ORG_A = UUID("aaaaaaaa-0000-4000-8000-00000000000a")
ORG_B = UUID("bbbbbbbb-0000-4000-8000-00000000000b")
H, D = HealthStatus.HEALTHY, HealthStatus.DEGRADED


def store_secret(root: Path, org: UUID, ref: str, secret: str) -> None:
    (root / str(org)).mkdir(exist_ok=True)
    (root / str(org) / ref).write_text(secret)


def tripletex_secret(consumer: str, employee: str) -> str:
    return json.dumps({"consumer_token": consumer, "employee_token": employee})


async def check(runner, org: UUID, kind: str, config: dict, ref: str = "ref") -> tuple:
    [r] = await runner.run([Integration(org, kind, config, ref)])
    return r.result.status, r.result.reason


async def test_dynamics_org_with_a_wrong_secret_gets_no_token_from_another_orgs_check(sim, http_session,
                                                                                     tmp_path) -> None:
    """Same token URL, client and org URL: before, B reused A's cached token and read healthy."""
    state, base = sim
    state.secrets["t"] = "right"
    store_secret(tmp_path, ORG_A, "ref", "right")
    store_secret(tmp_path, ORG_B, "ref", "wrong")
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(tmp_path)))
    config = FAKES["dynamics365"].config(base, "t")
    assert await check(runner, ORG_A, "dynamics365", config) == (H, None)
    assert await check(runner, ORG_B, "dynamics365", config) == (D, Reason.AUTH_INVALID)  # Entra: the wrong secret
    assert await check(runner, ORG_A, "dynamics365", config) == (H, None)  # A's token is still A's
    assert state.token_requests["t"] == 1


async def test_dynamics_org_without_a_secret_gets_no_token_from_another_orgs_check(sim, http_session,
                                                                                  tmp_path) -> None:
    """B has no secret at all: it is refused before any cache is consulted."""
    state, base = sim
    store_secret(tmp_path, ORG_A, "ref", "right")
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(tmp_path)))
    config = FAKES["dynamics365"].config(base, "t")
    assert await check(runner, ORG_A, "dynamics365", config) == (H, None)
    assert await check(runner, ORG_B, "dynamics365", config) == (D, Reason.AUTH)


async def test_tripletex_org_with_a_wrong_secret_gets_no_session_from_another_orgs_check(sim, http_session,
                                                                                        tmp_path) -> None:
    """Same base URL and reference name in two orgs: two sessions, and the wrong secret is refused."""
    state, base = sim
    state.secrets["t"] = "ct-A/et-A"
    store_secret(tmp_path, ORG_A, "ref", tripletex_secret("ct-A", "et-A"))
    store_secret(tmp_path, ORG_B, "ref", tripletex_secret("ct-B", "et-B"))
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(tmp_path)))
    config = FAKES["tripletex"].config(base, "t")
    assert await check(runner, ORG_A, "tripletex", config) == (H, None)
    assert await check(runner, ORG_B, "tripletex", config) == (D, Reason.AUTH)
    assert state.token_requests["t"] == 1


async def test_a_rotated_tripletex_secret_is_used_on_the_next_check(sim, http_session, tmp_path) -> None:
    """The cached session belongs to the old secret: the new one creates a session at once, not in 12 h."""
    state, base = sim
    state.secrets["t"] = "ct-1/et-1"
    store_secret(tmp_path, ORG_A, "ref", tripletex_secret("ct-1", "et-1"))
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(tmp_path)))
    config = FAKES["tripletex"].config(base, "t")
    assert await check(runner, ORG_A, "tripletex", config) == (H, None)
    assert await check(runner, ORG_A, "tripletex", config) == (H, None)
    assert state.token_requests["t"] == 1
    state.secrets["t"] = "ct-2/et-2"  # rotated at the vendor and in the store
    store_secret(tmp_path, ORG_A, "ref", tripletex_secret("ct-2", "et-2"))
    assert await check(runner, ORG_A, "tripletex", config) == (H, None)
    assert state.token_requests["t"] == 2


async def test_a_tripletex_secret_rotated_to_a_wrong_one_reads_degraded_on_the_next_check(sim, http_session,
                                                                                         tmp_path) -> None:
    """Before, the session cached for the reference kept reading healthy for ~12 h whatever the secret became."""
    state, base = sim
    state.secrets["t"] = "ct-1/et-1"
    store_secret(tmp_path, ORG_A, "ref", tripletex_secret("ct-1", "et-1"))
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(tmp_path)))
    config = FAKES["tripletex"].config(base, "t")
    assert await check(runner, ORG_A, "tripletex", config) == (H, None)
    store_secret(tmp_path, ORG_A, "ref", tripletex_secret("ct-1", "revoked"))
    assert await check(runner, ORG_A, "tripletex", config) == (D, Reason.AUTH)


async def test_a_secret_removed_from_the_store_reads_degraded_despite_a_cached_session(sim, http_session,
                                                                                      tmp_path) -> None:
    """Revoking a credential in the store counts on the next check: the secret is read every check."""
    state, base = sim
    store_secret(tmp_path, ORG_A, "ref", tripletex_secret("ct-1", "et-1"))
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(tmp_path)))
    config = FAKES["tripletex"].config(base, "t")
    assert await check(runner, ORG_A, "tripletex", config) == (H, None)
    (tmp_path / str(ORG_A) / "ref").unlink()
    assert await check(runner, ORG_A, "tripletex", config) == (D, Reason.AUTH)


async def test_a_rotated_dynamics_secret_fetches_a_new_token_on_the_next_check(sim, http_session, tmp_path) -> None:
    """A token is valid for the secret it was obtained with; a rotation asks the token endpoint again."""
    state, base = sim
    store_secret(tmp_path, ORG_A, "ref", "secret-1")
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(tmp_path)))
    config = FAKES["dynamics365"].config(base, "t")
    assert await check(runner, ORG_A, "dynamics365", config) == (H, None)
    state.secrets["t"] = "secret-2"
    store_secret(tmp_path, ORG_A, "ref", "secret-2")
    assert await check(runner, ORG_A, "dynamics365", config) == (H, None)
    assert state.token_requests["t"] == 2


async def test_a_refused_secret_is_dropped_from_the_credential_cache(sim, http_session, tmp_path) -> None:
    """The admin fixes a refused secret and presses "test connection": it counts now, not after the cache TTL."""
    state, base = sim
    state.secrets["t"] = "fixed"
    store_secret(tmp_path, ORG_A, "ref", "typo")
    credentials = CachedCredentials(DirectoryCredentials(tmp_path), ttl=300, monotonic=lambda: 0.0)
    runner = runner_for(AdapterContext(session=http_session, credentials=credentials))
    config = FAKES["fiken"].config(base, "t")
    assert await check(runner, ORG_A, "fiken", config) == (D, Reason.AUTH)
    store_secret(tmp_path, ORG_A, "ref", "fixed")
    assert await check(runner, ORG_A, "fiken", config) == (H, None)


async def test_a_secret_the_adapter_cannot_use_is_dropped_from_the_credential_cache(sim, http_session,
                                                                                    tmp_path) -> None:
    """A Tripletex secret that is not JSON reads auth; once fixed in the store it counts on the next check."""
    state, base = sim
    store_secret(tmp_path, ORG_A, "ref", "ct-1:et-1")
    credentials = CachedCredentials(DirectoryCredentials(tmp_path), ttl=300, monotonic=lambda: 0.0)
    runner = runner_for(AdapterContext(session=http_session, credentials=credentials))
    config = FAKES["tripletex"].config(base, "t")
    assert await check(runner, ORG_A, "tripletex", config) == (D, Reason.AUTH)
    store_secret(tmp_path, ORG_A, "ref", tripletex_secret("ct-1", "et-1"))
    assert await check(runner, ORG_A, "tripletex", config) == (H, None)


async def test_an_accepted_secret_stays_cached(sim, http_session) -> None:
    """Only a refusal drops the cached credential: healthy checks do not re-read the store."""
    state, base = sim
    credentials = StaticCredentials({"ref": "tok"})
    cached = CachedCredentials(credentials, ttl=300, monotonic=lambda: 0.0)
    runner = runner_for(AdapterContext(session=http_session, credentials=cached))
    for _ in range(3):
        assert await check(runner, ORG_A, "fiken", FAKES["fiken"].config(base, "t")) == (H, None)
    assert (credentials.reads, credentials.forgotten) == (1, [])


async def test_a_403_from_whoami_drops_the_tripletex_session(aiohttp_server, http_session) -> None:
    """A session the vendor now forbids is not reused: the next check creates a new one."""
    sessions: list[str] = []
    answers = iter([403, 200])

    async def create(request: web.Request) -> web.Response:
        sessions.append(f"s{len(sessions)}")
        return web.json_response({"value": {"token": sessions[-1]}})

    async def whoami(request: web.Request) -> web.Response:
        _, _, token = base64.b64decode(request.headers["Authorization"][6:]).decode().partition(":")
        status = next(answers, 200)
        return web.json_response({"value": {"employeeId": 1, "session": token}}, status=status)

    app = web.Application()
    app.router.add_put("/v2/token/session/:create", create)
    app.router.add_get("/v2/token/session/>whoAmI", whoami)
    server = await aiohttp_server(app)
    runner = runner_for(AdapterContext(session=http_session,
                                       credentials=StaticCredentials({"ref": tripletex_secret("c", "e")})))
    config = {"url": str(server.make_url("/v2"))}
    assert await check(runner, ORG_A, "tripletex", config) == (D, Reason.AUTH)
    assert await check(runner, ORG_A, "tripletex", config) == (H, None)
    assert sessions == ["s0", "s1"]


async def test_token_cache_keys_compare_a_keyed_hash_never_the_secret() -> None:
    """The fingerprint is not the secret, differs per secret, and means nothing to another process."""
    cache, other = TokenCache(lambda: 0.0), TokenCache(lambda: 0.0)
    fingerprint = cache.fingerprint("s3cret-value")
    assert "s3cret" not in fingerprint
    assert fingerprint != cache.fingerprint("s3cret-valuf")
    assert fingerprint != other.fingerprint("s3cret-value")

    async def fetch() -> tuple[str, float]:
        return f"token-{cache.fetches}", 3600.0

    assert await cache.get(("org", "ref"), "s3cret-value", fetch) == "token-0"
    assert await cache.get(("org", "ref"), "s3cret-value", fetch) == "token-0"
    assert await cache.get(("org", "ref"), "rotated", fetch) == "token-1"
    assert "s3cret-value" not in repr(cache._tokens)


async def test_checks_waiting_for_one_scopes_token_share_one_fetch_and_leave_no_lock_behind() -> None:
    """Concurrent checks of a scope fetch once; the lock serialising them lives only while a fetch is on."""
    cache, release = TokenCache(lambda: 0.0), asyncio.Event()

    async def fetch() -> tuple[str, float]:
        await release.wait()
        return f"token-{cache.fetches}", 3600.0

    waiting = [asyncio.ensure_future(cache.get(("org", "ref"), "secret", fetch)) for _ in range(5)]
    await asyncio.sleep(0)
    assert len(cache._locks) == 1
    release.set()
    assert await asyncio.gather(*waiting) == ["token-0"] * 5
    assert await cache.get(("org", "ref"), "secret", fetch) == "token-0"
    assert (cache.fetches, cache._locks) == (1, {})
