"""Secrets never leave the adapter: plant distinctive ones, run every mode, search every output."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from exporter.adapters.base import AdapterContext
from exporter.core.model import CREDENTIAL_REFUSED, HealthStatus, Reason, secret_name
from exporter.demo.seed import install_vault_stand_in
from exporter.demo.simulator import MODES, Mode, SimState, create_app
from exporter.engine.snapshot import Snapshot
from exporter.storage.credentials import SupabaseVaultCredentials
from exporter.storage.store import Store
from tests.support.fakes import check_org, loopback_session, runner_for
from tests.support.reference_exposition import reference_fleet

PLANTED = {
    "xl": "PLANTED-xledger-4f9d1c7e",
    "d365": "PLANTED-dynamics-a83b20ff",
    "tt-consumer": "PLANTED-ttconsumer-19c0",
    "tt-employee": "PLANTED-ttemployee-77e2",
    "fk": "PLANTED-fiken-5b6a9e01",
    "http": "PLANTED-httpbearer-c3d4",
    "url-password": "PLANTED-urlpass-0e1f",
    "url-query": "PLANTED-urlquery-9a8b",
}
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
VAULT_END, GRAPH_END = datetime(2027, 5, 1, tzinfo=UTC), datetime(2027, 6, 1, tzinfo=UTC)


def configs(base: str) -> dict[str, dict]:
    host = base.split("://", 1)[1]
    return {
        "xledger": {"url": f"{base}/xledger/xledger/graphql"},
        "dynamics365": {"org_url": f"{base}/dynamics/dynamics365", "tenant_id": "t", "client_id": "cid",
                        "token_url": f"{base}/login/dynamics365/oauth2/v2.0/token",
                        "read_secret_expiry": True, "graph_url": f"{base}/graph/dynamics365"},
        "tripletex": {"url": f"{base}/tripletex/tripletex/v2"},
        "fiken": {"url": f"{base}/fiken/fiken/api/v2"},
        "http": {"url": f"http://{host}/http/http?key={PLANTED['url-query']}",
                 "method": "GET", "auth": "header", "auth_header": "X-Api-Key"},
    }


def userinfo_config(base: str) -> dict:
    """A password in the URL's user-info: refused as invalid configuration, and not echoed."""
    return {"url": f"http://user:{PLANTED['url-password']}@{base.split('://', 1)[1]}/http/http", "method": "GET"}


REFS = {"xledger": "xl", "dynamics365": "d365", "tripletex": "tt", "fiken": "fk", "http": "http"}


@pytest.mark.parametrize("wrong_secrets", [False, True], ids=["right-secrets", "wrong-secrets"])
async def test_no_planted_secret_reaches_logs_errors_or_database_rows(
        aiohttp_server, admin, store: Store, caplog, wrong_secrets: bool) -> None:
    """Every mode, right and wrong secrets, and another org naming the planted secrets by id: nothing leaks."""
    caplog.set_level(logging.DEBUG)
    org, other_org = uuid4(), uuid4()
    tripletex = json.dumps({"consumer_token": PLANTED["tt-consumer"], "employee_token": PLANTED["tt-employee"]})
    ids = await install_vault_stand_in(admin, {
        secret_name(org, ref): value for ref, value in
        {"xl": PLANTED["xl"], "d365": PLANTED["d365"], "tt": tripletex, "fk": PLANTED["fk"],
         "http": PLANTED["http"]}.items()})
    # Expiries in the vault's descriptions: one readable, one "malformed" that is a planted secret itself.
    await admin.execute("UPDATE vault.secrets SET description = $2 WHERE name = $1", secret_name(org, "d365"),
                        "Dynamics secret; expires_at=2027-05-01T00:00:00Z")
    await admin.execute("UPDATE vault.secrets SET description = $2 WHERE name = $1", secret_name(org, "fk"),
                        f"expires_at={PLANTED['fk']}")
    state = SimState(secrets={} if not wrong_secrets else {k: "other/other" for k in REFS})
    if not wrong_secrets:
        state.secrets.update({"xledger": PLANTED["xl"], "dynamics365": PLANTED["d365"], "fiken": PLANTED["fk"],
                              "tripletex": f"{PLANTED['tt-consumer']}/{PLANTED['tt-employee']}"})
    state.app_secret_ends["dynamics365"] = GRAPH_END  # Graph's record of the secret, read once a day
    server = await aiohttp_server(create_app(state), access_log=None)  # the vendor's own log is not ours
    userinfo_org, base = uuid4(), str(server.make_url("")).rstrip("/")
    for kind, config in configs(base).items():
        for owner, ref in ((org, REFS[kind]), (other_org, str(ids[secret_name(org, REFS[kind])]))):
            await admin.execute("INSERT INTO integration_config (org_id, integration_type, config, credential_ref) "
                                "VALUES ($1, $2, $3::jsonb, $4)", owner, kind, json.dumps(config), ref)
    await admin.execute("INSERT INTO integration_config (org_id, integration_type, config) VALUES ($1, 'http', "
                        "$2::jsonb)", userinfo_org, json.dumps(userinfo_config(base)))
    outputs: list[str] = []
    in_healthy_mode: dict[str, tuple[HealthStatus, Reason | None, str | None]] = {}
    async with loopback_session() as session:
        ctx = AdapterContext(session=session, credentials=SupabaseVaultCredentials(store.pool))
        runner = runner_for(ctx, timeout=0.5)
        for i, mode in enumerate(MODES):
            state.modes = {k: Mode(mode, ms=5) for k in REFS}
            slot = T0 + i * timedelta(minutes=15)
            results = await check_org(org, store=store, runner=runner, slot=slot)
            refused = await check_org(other_org, store=store, runner=runner, slot=slot)
            outputs += [repr(r.result) for r in results + refused]  # every field
            outputs += [repr(r) for r in results + refused]
            if mode == "healthy":
                in_healthy_mode = {r.integration_type: (r.result.status, r.result.reason, r.result.error)
                                   for r in results}
                expiries = {r.integration_type: r.result.credential_expires_at for r in results}
                snapshot = Snapshot()
                snapshot.update(results + refused)
                exposition = reference_fleet(snapshot).decode()  # the expiry is exported: nothing else with it
            # the other org names the planted secrets by id: refused like a missing secret, in every mode
            assert {(r.result.status, r.result.reason, r.result.error) for r in refused} == {
                (HealthStatus.DEGRADED, Reason.AUTH, f"credential unavailable: {CREDENTIAL_REFUSED}")}
        [with_userinfo] = await check_org(userinfo_org, store=store, runner=runner, slot=T0)
    assert len(outputs) == 2 * 2 * len(MODES) * len(REFS)
    outputs += [repr(with_userinfo.result), repr(with_userinfo), exposition]
    assert "integration_health_credential_expiry_timestamp_seconds{" in exposition
    assert (with_userinfo.result.status, with_userinfo.result.reason) == (HealthStatus.UNREACHABLE,
                                                                          Reason.INVALID_CONFIG)
    assert (with_userinfo.result.error or "").startswith("invalid configuration: config.url: user-info")
    # Before scanning: the secrets were fetched from the vault and reached the vendors (a vault refusing
    # them would leave nothing to leak, and every check "credential unavailable").
    assert in_healthy_mode["http"] == (HealthStatus.HEALTHY, None, None)  # its header carries the secret
    # Graph's date when it could be asked (a wrong secret gets no Graph token: the vault's then); none for Fiken,
    # whose description's expiry was the malformed one.
    assert expiries == {"xledger": None, "tripletex": None, "fiken": None, "http": None,
                        "dynamics365": VAULT_END if wrong_secrets else GRAPH_END}
    assert "credential 'fk': its expiry is not an ISO 8601 date or time; ignored" in caplog.text
    vendors = {kind: in_healthy_mode[kind] for kind in REFS if kind != "http"}
    # Each simulated vendor accepts only its planted secret; with the wrong ones it saw a secret and refused it.
    expected = (HealthStatus.DEGRADED, Reason.AUTH) if wrong_secrets else (HealthStatus.HEALTHY, None)
    if wrong_secrets:  # Entra ID says why: the secret is wrong
        expected_by_kind = dict.fromkeys(vendors, expected) | {"dynamics365": (HealthStatus.DEGRADED,
                                                                                Reason.AUTH_INVALID)}
    else:
        expected_by_kind = dict.fromkeys(vendors, expected)
    assert {kind: (status, reason) for kind, (status, reason, _) in vendors.items()} == expected_by_kind
    if wrong_secrets:
        assert all("credentials rejected" in error for _, _, error in vendors.values()), vendors
    for table in ("integration_health_status", "health_check_history"):
        outputs += [json.dumps([dict(r) for r in await admin.fetch(f"SELECT * FROM {table}")], default=str)]
    outputs += [caplog.text]
    outputs += [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    everything = "\n".join(outputs)
    leaked = [name for name, secret in PLANTED.items() if secret in everything]
    assert leaked == []
