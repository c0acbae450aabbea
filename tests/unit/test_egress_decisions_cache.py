"""The client remembers the egress decisions that permitted (client.PermittedCache), and only those:
a refused destination is refused every time, and a name that resolves to other addresses is judged again."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from exporter.adapters.base import AdapterContext
from exporter.adapters.client import HttpClient, PermittedCache
from exporter.adapters.transport import fetch
from exporter.core.egress import Blocked, EgressPolicy, VendorHosts
from tests.support.listener import Listener

ALLOW_LOOPBACK_V4 = EgressPolicy.from_allow(["127.0.0.1"])


class SwitchableResolver:
    """Answers every name with `addresses`, which a test changes between requests (a DNS rebinding)."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses, self.asked = addresses, 0

    async def __call__(self, host: str, port: int) -> tuple[str, ...]:
        self.asked += 1
        return tuple(self.addresses)


class Uncached(HttpClient):
    """The client with its DNS cache off, as a test of rebinding needs: every connection asks the resolver."""

    async def _addresses(self, host: str, port: int) -> tuple[str, ...]:
        return await self._resolve(host, port)


@pytest.fixture
async def listener():
    server = await Listener().start()
    yield server
    await server.close()


@contextlib.asynccontextmanager
async def loopback_names() -> AsyncIterator[tuple[AdapterContext, HttpClient, SwitchableResolver]]:
    """A client whose every name resolves to 127.0.0.1 until a test says otherwise, loopback allowed."""
    resolver = SwitchableResolver(["127.0.0.1"])
    async with Uncached(policy=ALLOW_LOOPBACK_V4, resolve=resolver, force_close=True) as client:
        yield AdapterContext(session=client), client, resolver


async def test_a_name_rebound_to_a_refused_address_is_refused_after_it_was_permitted(listener) -> None:
    async with loopback_names() as (ctx, _, resolver):
        url = f"http://rebinding.example:{listener.port}/"
        assert (await fetch(ctx, "GET", url)).status == 200
        resolver.addresses = ["127.0.0.1", "10.0.0.5"]  # the same name now also names an internal address
        for _ in range(2):  # refused, and the refusal is not remembered as a pass either
            with pytest.raises(Blocked, match="rebinding.example"):
                await fetch(ctx, "GET", url)
        resolver.addresses = ["127.0.0.1"]
        assert (await fetch(ctx, "GET", url)).status == 200
    assert (listener.connections, resolver.asked) == (2, 4)


async def test_a_refused_literal_address_is_refused_on_every_request(listener) -> None:
    async with HttpClient(policy=EgressPolicy(), force_close=True) as client:
        ctx = AdapterContext(session=client)
        for _ in range(3):
            with pytest.raises(Blocked, match="loopback"):
                await fetch(ctx, "GET", f"http://127.0.0.1:{listener.port}/")
    assert listener.connections == 0
    assert client.permitted.permitted == {}


async def test_a_vendor_request_permitted_for_one_host_does_not_open_another(listener) -> None:
    vendor = VendorHosts(("api.vendor.example",))
    async with HttpClient(policy=EgressPolicy()) as client:
        ctx = AdapterContext(session=client, vendor=vendor)
        client.check_request(URL("https://api.vendor.example/v1"), vendor)
        for url in ("https://other.example/v1", "http://api.vendor.example/v1", "https://api.vendor.example:8443/"):
            with pytest.raises(Blocked):
                await fetch(ctx, "GET", url)
        with pytest.raises(Blocked):  # another vendor's hosts are its own, whatever this one was permitted
            client.check_request(URL("https://api.vendor.example/v1"), VendorHosts(("x.example",)))


async def test_a_new_policy_forgets_what_the_old_one_permitted(listener) -> None:
    async with loopback_names() as (ctx, client, _):
        url = f"http://loopback.example:{listener.port}/"
        assert (await fetch(ctx, "GET", url)).status == 200
        client.policy = EgressPolicy()  # loopback no longer allowed
        with pytest.raises(Blocked, match="loopback.example"):
            await fetch(ctx, "GET", url)
    assert listener.connections == 1


def test_the_cache_keeps_only_passes_and_starts_again_when_full() -> None:
    cache, judged = PermittedCache(limit=2), []

    def judge(name: str) -> None:
        judged.append(name)
        if name == "refused":
            raise Blocked(name)

    for name in ("a", "a", "refused", "b", "c", "a"):
        try:
            cache.check((name,), judge, name)
        except Blocked:
            pass
    with pytest.raises(Blocked):
        cache.check(("refused",), judge, "refused")
    assert judged == ["a", "refused", "b", "c", "a", "refused"]  # a judged again after the cache filled up


async def test_a_cookie_one_target_sets_is_never_sent_on_another_check(aiohttp_server) -> None:
    """The shared session keeps no cookies: one tenant's target cannot plant what another's request carries."""
    from aiohttp import web

    from tests.support.fakes import loopback_session

    seen: list[str | None] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(text="ok")
        response.set_cookie("session", "planted-by-tenant-a")
        return response

    app = web.Application()
    app.router.add_get("/{tenant}", answer)
    server = await aiohttp_server(app)
    async with loopback_session() as session:
        ctx = AdapterContext(session=session)
        for tenant in ("a", "b"):
            assert (await fetch(ctx, "GET", f"http://localhost:{server.port}/{tenant}")).status == 200  # a name: a jar
            # would keep its cookies (never an IP literal's)
    assert seen == [None, None]
