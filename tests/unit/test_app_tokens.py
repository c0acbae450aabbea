"""The app's own tokens on /api/v1: a signed-in user's Supabase JWT reads and tests its own organisations,
nothing else; bad tokens are 401 with a challenge; the operator token keeps working everywhere.

Tokens are minted here with PyJWT; asymmetric keys are served as a JWKS by a loopback aiohttp server that
counts its hits, and the key cache runs on a clock the tests move."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from exporter.core.model import Integration
from exporter.services import build_services
from exporter.settings import Settings
from exporter.web.app import create_app
from exporter.web.auth import bearer_token
from exporter.web.jwks import JwksCache, JwksFetchError, parse_jwks
from tests.helpers import AUTH, JWT_SECRET, TOKEN, app_token, bearer, settings_for, wait_until
from tests.support.fakes import loopback_session
from tests.support.memory_store import MemoryStore

ORG_A = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
ORG_B = UUID("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ROTATED_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
CHALLENGE = 'Bearer realm="integration-health", error="invalid_token"'


def jwk(private_key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    """The public half of `private_key` as a JWKS entry."""
    rsa_key = isinstance(private_key, rsa.RSAPrivateKey)
    algorithm = jwt.algorithms.RSAAlgorithm if rsa_key else jwt.algorithms.ECAlgorithm
    return algorithm.to_jwk(private_key.public_key(), as_dict=True) | {"kid": kid, "use": "sig"} | extra


def rs256(claims: dict[str, Any], key: Any = RSA_KEY, kid: str = "rsa-1", algorithm: str = "RS256") -> str:
    return app_token(claims, key=key, algorithm=algorithm, headers={"kid": kid})


def member_of(org: UUID) -> dict[str, Any]:
    return {"app_metadata": {"provider": "email", "org_id": str(org)}}


@dataclass
class KeyServer:
    """The JWKS endpoint: what it serves, how it answers, how often it was asked."""

    keys: list[dict[str, Any]] = field(default_factory=lambda: [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")])
    status: int = 200
    hits: int = 0


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Api:
    client: Any
    keys: KeyServer
    clock: Clock
    sim_requests: dict[str, int]


@pytest.fixture
async def key_server(aiohttp_server) -> tuple[KeyServer, str]:
    served = KeyServer()

    async def jwks(request: web.Request) -> web.Response:
        served.hits += 1
        if served.status != 200:
            return web.Response(status=served.status, text="down")
        return web.json_response({"keys": served.keys})

    app = web.Application()
    app.router.add_get("/auth/v1/.well-known/jwks.json", jwks)
    server = await aiohttp_server(app)
    return served, str(server.make_url("/auth/v1/.well-known/jwks.json"))


@pytest.fixture
async def start(aiohttp_client, sim, key_server) -> AsyncIterator:
    """Start the service over a MemoryStore holding orgs A and B (an http integration each, on the simulator),
    accepting JWTs by `jwt_secret` and the loopback JWKS unless the overrides say otherwise."""
    state, base = sim
    keys, url = key_server
    async with loopback_session() as session:
        async def _start(**overrides: Any) -> Api:
            store = MemoryStore([Integration(org, "http", {"url": f"{base}/http/ok", "method": "GET"})
                                 for org in (ORG_A, ORG_B)])
            settings = settings_for("postgresql://unused", **({"jwt_secret": JWT_SECRET, "jwt_jwks_url": url,
                                                               "run_now_min_interval_seconds": 60} | overrides))
            services = build_services(settings, store=store, session=session)  # type: ignore[arg-type]
            clock = Clock()
            cache = JwksCache(settings.jwt_jwks_url, clock=clock) if settings.jwt_jwks_url else None
            client = await aiohttp_client(create_app(settings, services, jwks=cache))
            await wait_until(lambda: services.scheduler.last_slot is not None, what="the first cycle")
            return Api(client, keys, clock, state.requests)
        yield _start


@pytest.fixture
async def api(start) -> Api:
    return await start()


async def status_and_error(api: Api, path: str, headers: dict[str, str], method: str = "GET") -> tuple[int, str]:
    resp = await api.client.request(method, path, headers=headers)
    body = await resp.json()
    return resp.status, body.get("error", "")


# A member of org A.


async def test_a_member_of_org_a_reads_org_a_health_and_history(api) -> None:
    headers = bearer(app_token(member_of(ORG_A)))
    health = await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=headers)
    body = await health.json()
    assert (health.status, body["org_id"], [i["status"] for i in body["integrations"]]) == (200, str(ORG_A),
                                                                                             ["healthy"])
    history = await api.client.get(f"/api/v1/orgs/{ORG_A}/health/history", headers=headers)
    assert (history.status, [i["integration_type"] for i in (await history.json())["integrations"]]) == (200, ["http"])


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/orgs/{org}/health"),
                                              ("GET", "/api/v1/orgs/{org}/health/history"),
                                              ("POST", "/api/v1/orgs/{org}/checks")])
async def test_a_member_of_org_a_gets_403_with_a_reason_on_org_b(api, method: str, path: str) -> None:
    before = dict(api.sim_requests)
    resp = await api.client.request(method, path.format(org=ORG_B), headers=bearer(app_token(member_of(ORG_A))))
    assert (resp.status, await resp.json()) == (403, {"error": f"this token does not grant access to organisation "
                                                               f"{ORG_B}"})
    assert api.sim_requests == before, "nothing was checked for org B"


@pytest.mark.parametrize("claims", [{"org_id": str(ORG_A)}, {"app_metadata": {"org_id": str(ORG_A)}},
                                    {"app_metadata": {"org_ids": [str(ORG_B), str(ORG_A)]}}],
                         ids=["top-level org_id", "app_metadata.org_id", "app_metadata.org_ids"])
async def test_membership_is_read_from_the_claims_rls_reads(api, claims: dict[str, Any]) -> None:
    assert (await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=bearer(app_token(claims)))).status == 200


async def test_user_metadata_which_users_edit_themselves_grants_nothing(api) -> None:
    token = app_token({"user_metadata": {"org_id": str(ORG_A), "org_ids": [str(ORG_A)]}})
    assert (await status_and_error(api, f"/api/v1/orgs/{ORG_A}/health", bearer(token)))[0] == 403


async def test_a_member_of_two_orgs_reads_both(api) -> None:
    headers = bearer(app_token({"org_id": str(ORG_A), "app_metadata": {"org_ids": [str(ORG_B)]}}))
    statuses = [(await api.client.get(f"/api/v1/orgs/{org}/health", headers=headers)).status for org in (ORG_A, ORG_B)]
    assert statuses == [200, 200]


async def test_run_now_keeps_its_per_org_limit_whoever_calls(api) -> None:
    member = bearer(app_token(member_of(ORG_A)))
    first = await api.client.post(f"/api/v1/orgs/{ORG_A}/checks", headers=member)
    assert (first.status, [i["status"] for i in (await first.json())["integrations"]]) == (200, ["healthy"])
    operator = await api.client.post(f"/api/v1/orgs/{ORG_A}/checks", headers=AUTH)
    again = await api.client.post(f"/api/v1/orgs/{ORG_A}/checks", headers=member)
    assert (operator.status, again.status) == (429, 429)
    assert (await api.client.post(f"/api/v1/orgs/{ORG_B}/checks", headers=AUTH)).status == 200, "per org, not global"


async def test_an_app_users_token_cannot_report_sync_runs_even_for_its_own_org(api) -> None:
    run = {"org_id": str(ORG_A), "integration_type": "http", "scheduled_for": "2026-11-22T01:00:00Z",
           "outcome": "success"}
    resp = await api.client.post("/api/v1/sync-runs", json=run, headers=bearer(app_token(member_of(ORG_A))))
    assert (resp.status, (await resp.json())["error"]) == (
        403, "this route needs the operator token (EXPORTER_API_TOKEN); an app user's token cannot use it")
    assert (await api.client.post("/api/v1/sync-runs", json=run, headers=AUTH)).status == 200


async def test_a_member_gets_400_for_a_bad_org_id_and_404_for_an_unknown_route(api) -> None:
    headers = bearer(app_token(member_of(ORG_A)))
    assert (await status_and_error(api, "/api/v1/orgs/not-a-uuid/health", headers)) == (400, "org_id must be a UUID")
    assert (await status_and_error(api, "/api/v1/nope", headers))[0] == 404


async def test_the_operator_token_reads_every_org(api) -> None:
    statuses = [(await api.client.get(f"/api/v1/orgs/{org}/health", headers=AUTH)).status for org in (ORG_A, ORG_B)]
    assert statuses == [200, 200]


# Tokens that are not a signed-in user's, or not good.


def tampered() -> str:
    """A token for org A whose payload was swapped for org B's, signature kept."""
    header, _, signature = app_token(member_of(ORG_A)).split(".")
    payload = app_token(member_of(ORG_B)).split(".")[1]
    return f"{header}.{payload}.{signature}"


NOW = int(time.time())
BAD_TOKENS = {
    "anon": (lambda: app_token({"role": "anon", **member_of(ORG_A)}),
             "the token is not a signed-in user's (its role is not 'authenticated')"),
    "no role": (lambda: app_token({"role": None, **member_of(ORG_A)}),
                "the token is not a signed-in user's (its role is not 'authenticated')"),
    "expired": (lambda: app_token({"iat": NOW - 7200, "exp": NOW - 3600, **member_of(ORG_A)}), "the token has expired"),
    "not valid yet": (lambda: app_token({"nbf": int(time.time()) + 3600, **member_of(ORG_A)}),
                      "the token is not valid yet (nbf/iat in the future)"),
    "no exp": (lambda: app_token({"exp": None, **member_of(ORG_A)}), "the token has no 'exp' claim"),
    "wrong audience": (lambda: app_token({"aud": "some-other-app", **member_of(ORG_A)}),
                       "the token's audience is not 'authenticated'"),
    "no audience": (lambda: app_token({"aud": None, **member_of(ORG_A)}), "the token has no 'aud' claim"),
    "wrong secret": (lambda: app_token(member_of(ORG_A), key="another-projects-secret-0123456789abcdef"),
                     "the token's signature does not verify"),
    "payload swapped": (tampered, "the token's signature does not verify"),
    "alg none": (lambda: jwt.encode({"role": "authenticated", "aud": "authenticated", "exp": NOW + 3600,
                                     **member_of(ORG_A)}, None, algorithm="none"),
                 "the token's signing algorithm is not accepted"),
    "HS512": (lambda: app_token(member_of(ORG_A), algorithm="HS512"), "the token's signing algorithm is not accepted"),
    "RS384 with a known kid": (lambda: rs256(member_of(ORG_A), algorithm="RS384"),
                               "the token's signing algorithm is not accepted"),
    "ES256 naming an RSA key": (lambda: rs256(member_of(ORG_A), key=EC_KEY, algorithm="ES256"),
                                "the token's algorithm does not match its signing key"),
    "RS256 without a kid": (lambda: app_token(member_of(ORG_A), key=RSA_KEY, algorithm="RS256"),
                            "the token names no signing key (kid)"),
    "three dots of garbage": (lambda: "abc.def.ghi", "the token is not a valid JWT"),
    "not a JWT": (lambda: "wrong", "missing or wrong bearer token"),
}


@pytest.mark.parametrize("name", BAD_TOKENS)
@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # minting HS512 with a 256-bit secret
async def test_a_token_that_is_not_a_signed_in_users_or_not_good_is_401_with_a_challenge(api, name: str) -> None:
    mint, reason = BAD_TOKENS[name]
    resp = await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=bearer(mint()))
    assert (resp.status, (await resp.json())["error"], resp.headers["WWW-Authenticate"]) == (401, reason, CHALLENGE)


async def test_no_token_is_401_with_a_bare_bearer_challenge(api) -> None:
    resp = await api.client.get(f"/api/v1/orgs/{ORG_A}/health")
    assert (resp.status, resp.headers["WWW-Authenticate"]) == (401, 'Bearer realm="integration-health"')


async def test_an_expiry_within_the_leeway_is_still_accepted(api) -> None:
    token = app_token({"exp": int(time.time()) - 1, **member_of(ORG_A)})  # 30 s of clock skew are allowed
    assert (await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=bearer(token))).status == 200


async def test_a_service_role_token_is_refused_with_403_the_operator_token_is_for_services(api) -> None:
    token = app_token({"role": "service_role", **member_of(ORG_A)})
    assert await status_and_error(api, f"/api/v1/orgs/{ORG_A}/health", bearer(token)) == (
        403, "a service_role token is not accepted here: services use the operator token (EXPORTER_API_TOKEN)")


def hs256_signed_with_the_public_key(kid: str) -> str:
    """The classic confusion attack: an HS256 token whose HMAC key is the RS256 public key, which anyone has."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = {"sub": "attacker", "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 3600,
              **member_of(ORG_A)}
    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + "." + b64(
        json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize(("overrides", "reason"), [
    ({}, "the token's signature does not verify"),
    ({"jwt_secret": None}, "the token's signing algorithm is not accepted"),
], ids=["secret and JWKS configured", "JWKS only"])
async def test_an_hs256_token_signed_with_the_jwks_public_key_is_401(start, overrides, reason) -> None:
    api = await start(**overrides)
    assert await status_and_error(api, f"/api/v1/orgs/{ORG_A}/health",
                                  bearer(hs256_signed_with_the_public_key("rsa-1"))) == (401, reason)


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # minting with the weak key
async def test_a_jwks_key_shorter_than_2048_bits_verifies_nothing(api) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    api.keys.keys.append(jwk(weak, "weak"))
    assert await status_and_error(api, f"/api/v1/orgs/{ORG_A}/health", bearer(rs256(member_of(ORG_A), weak, "weak"))
                                  ) == (401, "the token is not a valid JWT")


async def test_the_bearer_scheme_is_case_insensitive_and_other_schemes_are_not_bearer() -> None:
    assert (bearer_token("bearer abc"), bearer_token("BEARER  abc "), bearer_token("Basic abc"),
            bearer_token("abc"), bearer_token("Bearer "), bearer_token(None)) == ("abc", "abc", None, None, None, None)


# Keys from the JWKS.


@pytest.mark.parametrize(("key", "kid", "algorithm"), [(RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256")])
async def test_asymmetric_tokens_verify_with_the_jwks_key_their_kid_names(api, key, kid, algorithm) -> None:
    headers = bearer(rs256(member_of(ORG_A), key, kid, algorithm))
    assert [(await api.client.get(f"/api/v1/orgs/{org}/health", headers=headers)).status
            for org in (ORG_A, ORG_B)] == [200, 403]
    assert api.keys.hits == 1


async def test_the_jwks_is_fetched_once_and_then_served_from_the_cache(api) -> None:
    for _ in range(3):
        assert (await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=bearer(rs256(member_of(ORG_A))))
                ).status == 200
    assert api.keys.hits == 1


async def test_an_unknown_kid_is_one_jwks_refresh_then_401_and_cannot_force_more(api) -> None:
    known, unknown = bearer(rs256(member_of(ORG_A))), bearer(rs256(member_of(ORG_A), ROTATED_KEY, "rsa-2"))
    path = f"/api/v1/orgs/{ORG_A}/health"
    assert (await api.client.get(path, headers=known)).status == 200
    assert (await status_and_error(api, path, unknown), api.keys.hits) == (
        (401, "the token's signing key (kid) is unknown"), 1), "fetched a moment ago: no refresh yet"
    api.clock.now += 31  # past the 30 s between refreshes
    assert (await status_and_error(api, path, unknown))[0] == 401
    assert api.keys.hits == 2, "one refresh for the unknown kid"
    for kid in ("rsa-2", "rsa-3", "made-up"):
        assert (await api.client.get(path, headers=bearer(rs256(member_of(ORG_A), ROTATED_KEY, kid)))).status == 401
    assert api.keys.hits == 2, "more unknown kids within 30 s fetch nothing"
    assert (await api.client.get(path, headers=known)).status == 200


async def test_concurrent_requests_with_an_unknown_kid_share_one_fetch(api) -> None:
    unknown = bearer(rs256(member_of(ORG_A), ROTATED_KEY, "rsa-2"))
    responses = await asyncio.gather(*[api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=unknown)
                                       for _ in range(8)])
    assert ([r.status for r in responses], api.keys.hits) == ([401] * 8, 1)


async def test_a_key_rotated_in_is_picked_up_by_the_refresh_its_kid_triggers(api) -> None:
    assert (await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=bearer(rs256(member_of(ORG_A))))
            ).status == 200
    api.keys.keys.append(jwk(ROTATED_KEY, "rsa-2"))
    api.clock.now += 31
    rotated = bearer(rs256(member_of(ORG_A), ROTATED_KEY, "rsa-2"))
    assert ((await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=rotated)).status, api.keys.hits) == (200, 2)


async def test_a_key_removed_from_the_jwks_stops_working_once_the_cache_is_ten_minutes_old(api) -> None:
    headers, path = bearer(rs256(member_of(ORG_A))), f"/api/v1/orgs/{ORG_A}/health"
    assert (await api.client.get(path, headers=headers)).status == 200
    api.keys.keys = [jwk(EC_KEY, "ec-1")]
    api.clock.now += 599
    assert (await api.client.get(path, headers=headers)).status == 200, "still within the cache's age"
    api.clock.now += 2
    assert ((await api.client.get(path, headers=headers)).status, api.keys.hits) == (401, 2)


async def test_a_jwks_outage_before_any_key_is_a_503_and_hs256_tokens_still_work(api) -> None:
    api.keys.status = 500
    path = f"/api/v1/orgs/{ORG_A}/health"
    for _ in range(2):
        resp = await api.client.get(path, headers=bearer(rs256(member_of(ORG_A))))
        assert (resp.status, resp.headers["Retry-After"], (await resp.json())["error"]) == (
            503, "30", "the app's signing keys (JWKS) could not be fetched; try again shortly")
    assert api.keys.hits == 1, "the outage is not hammered either"
    assert (await api.client.get(path, headers=bearer(app_token(member_of(ORG_A))))).status == 200
    api.keys.status, api.clock.now = 200, api.clock.now + 31
    assert (await api.client.get(path, headers=bearer(rs256(member_of(ORG_A))))).status == 200


async def test_a_jwks_outage_after_keys_were_fetched_keeps_the_known_keys(api) -> None:
    headers, path = bearer(rs256(member_of(ORG_A))), f"/api/v1/orgs/{ORG_A}/health"
    assert (await api.client.get(path, headers=headers)).status == 200
    api.keys.status, api.clock.now = 503, api.clock.now + 601
    assert ((await api.client.get(path, headers=headers)).status, api.keys.hits) == (200, 2)


def test_a_jwks_keeps_only_signing_keys_with_a_kid_for_rs256_or_es256() -> None:
    keys = parse_jwks({"keys": [
        jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1"), jwk(ROTATED_KEY, "rsa-1"),  # a repeated kid keeps the first
        jwk(ROTATED_KEY, "enc", use="enc"), jwk(ROTATED_KEY, ""), {k: v for k, v in jwk(RSA_KEY, "x").items()
                                                                   if k != "kid"},
        jwk(RSA_KEY, "ps", alg="PS256"), {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "broken", "n": "AQAB"}, "not a key"]})
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {"rsa-1": "RS256", "ec-1": "ES256"}
    assert keys["rsa-1"].key.public_numbers() == RSA_KEY.public_key().public_numbers()


@pytest.mark.parametrize("document", [[], {"keys": {}}, {"jwks": []}, "x"])
def test_an_answer_that_is_not_a_jwks_is_an_error(document: object) -> None:
    with pytest.raises(JwksFetchError, match="not a JWKS"):
        parse_jwks(document)


def test_the_jwks_cache_refuses_a_refresh_interval_longer_than_its_max_age() -> None:
    with pytest.raises(ValueError, match="min_refresh_s"):
        JwksCache("https://example.invalid/jwks.json", min_refresh_s=60, max_age_s=30)


# Configuration.


async def test_with_only_a_jwt_secret_app_users_get_in_and_no_operator_token_exists(start) -> None:
    api = await start(api_token=None, jwt_jwks_url=None)
    path = f"/api/v1/orgs/{ORG_A}/health"
    assert (await api.client.get(path, headers=bearer(app_token(member_of(ORG_A))))).status == 200
    assert await status_and_error(api, path, AUTH) == (401, "missing or wrong bearer token")
    assert await status_and_error(api, path, {"Authorization": "Bearer "}) == (401, "missing or wrong bearer token")


async def test_neither_an_app_token_nor_the_operator_token_opens_metrics_guarded_by_its_own_token(start) -> None:
    api = await start(metrics_token="metrics-token-0123456789")
    member = bearer(app_token(member_of(ORG_A)))
    assert [(await api.client.get("/metrics", headers=headers)).status for headers in (member, AUTH)] == [401, 401]
    assert (await api.client.get("/metrics", headers=bearer("metrics-token-0123456789"))).status == 200
    assert (await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers=member)).status == 200


async def test_an_empty_operator_token_admits_nobody(start) -> None:
    api = await start(api_token="", jwt_secret=None, jwt_jwks_url=None)
    assert (await api.client.get(f"/api/v1/orgs/{ORG_A}/health", headers={"Authorization": "Bearer "})).status == 503


async def test_a_configured_issuer_is_required(start) -> None:
    issuer = "https://project.supabase.co/auth/v1"
    api = await start(jwt_issuer=issuer)
    path = f"/api/v1/orgs/{ORG_A}/health"
    results = [await status_and_error(api, path, bearer(app_token({"iss": iss, **member_of(ORG_A)})))
               for iss in (issuer, "https://other.supabase.co/auth/v1", None)]
    assert results == [(200, ""), (401, "the token's issuer is not accepted"), (401, "the token has no 'iss' claim")]


@pytest.mark.parametrize(("env", "error"), [
    ({"EXPORTER_JWT_SECRET": "too-short"}, "EXPORTER_JWT_SECRET: shorter than 32 characters"),
    ({"EXPORTER_JWT_JWKS_URL": "http://auth.example.com/jwks.json"}, "EXPORTER_JWT_JWKS_URL: must be an https:// URL"),
    ({"EXPORTER_JWT_JWKS_URL": "ftp://localhost/jwks.json"}, "EXPORTER_JWT_JWKS_URL: must be an https:// URL"),
    ({"EXPORTER_JWT_AUDIENCE": ""}, "EXPORTER_JWT_AUDIENCE"),
])
def test_a_weak_or_clear_text_jwt_setting_is_refused_naming_the_variable(monkeypatch, env, error) -> None:
    from pydantic import ValidationError

    from exporter.settings import describe_settings_error

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert error in describe_settings_error(caught.value)
    assert "too-short" not in describe_settings_error(caught.value), "a secret is never echoed"


@pytest.mark.parametrize(("env", "accepts_jwts"), [
    ({"EXPORTER_JWT_JWKS_URL": "https://p.supabase.co/auth/v1/.well-known/jwks.json"}, True),
    ({"EXPORTER_JWT_JWKS_URL": "http://127.0.0.1:9999/auth/v1/.well-known/jwks.json"}, True),
    ({"EXPORTER_JWT_JWKS_URL": " "}, False),
    ({"EXPORTER_JWT_SECRET": JWT_SECRET}, True),
    ({}, False),
])
def test_jwt_settings_from_the_environment(monkeypatch, env: dict[str, str], accepts_jwts: bool) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().jwt_enabled is accepts_jwts


def serve_check(**settings: Any) -> str | None:
    from exporter.cli import UsageError, require_api_token

    try:
        require_api_token(Settings(**settings))
    except UsageError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(("settings", "refused"), [
    ({}, "the API has no way to authenticate anyone"),
    ({"api_token": "short"}, "EXPORTER_API_TOKEN is shorter than 16 characters"),
    ({"api_token": "", "jwt_secret": JWT_SECRET}, "EXPORTER_API_TOKEN is shorter than 16 characters"),
    ({"api_token": TOKEN + "-long-enough"}, None),
    ({"jwt_secret": JWT_SECRET}, None),
    ({"jwt_jwks_url": "https://p.supabase.co/auth/v1/.well-known/jwks.json"}, None),
    ({"api_enabled": False}, None),
])
def test_serve_refuses_an_open_api_but_accepts_one_with_only_app_jwts(settings: dict[str, Any],
                                                                        refused: str | None) -> None:
    message = serve_check(**settings)
    assert (None if message is None else message[:len(refused or "")]) == refused, message
