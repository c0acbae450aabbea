"""Org B's rows name org A's secrets (directory provider) and point every adapter at an attacker's host:
nothing reaches the host, B reads degraded/auth exactly as for a missing secret, A keeps working."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest

from exporter.adapters import ADAPTERS
from exporter.adapters.base import AdapterContext
from exporter.core.model import CREDENTIAL_REFUSED, HealthStatus, Integration, Reason
from exporter.demo.simulator import FAKES
from exporter.storage.credentials import DirectoryCredentials
from tests.support.attacker import AttackerHost
from tests.support.fakes import runner_for

ORG_A = UUID("aaaaaaaa-0000-4000-8000-00000000000a")
ORG_B = UUID("bbbbbbbb-0000-4000-8000-00000000000b")
KINDS = list(ADAPTERS)
MISSING = f"credential unavailable: {CREDENTIAL_REFUSED}"


def planted(kind: str) -> str:
    """Org A's secret for `kind`, distinctive enough to search for (Tripletex's holds two tokens)."""
    return FAKES[kind].credential(f"PLANTED-A-{kind}")[0]


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """A's five secrets under A's directory; B has a directory with nothing of A's in it."""
    for org in (ORG_A, ORG_B):
        (tmp_path / str(org)).mkdir()
    for kind in KINDS:
        (tmp_path / str(ORG_A) / kind).write_text(planted(kind))
    return tmp_path


@pytest.fixture
async def attacker(aiohttp_server) -> tuple[AttackerHost, str]:
    host = AttackerHost()
    server = await aiohttp_server(host.app(), access_log=None)
    return host, str(server.make_url("")).rstrip("/")


def b_rows(base: str, ref: str) -> list[Integration]:
    return [Integration(ORG_B, kind, FAKES[kind].config(base, "evil"), ref.replace("{kind}", kind)) for kind in KINDS]


@pytest.mark.parametrize("ref", ["{kind}", f"../{ORG_A}/{{kind}}", f"{ORG_A}/{{kind}}", f"./../{ORG_A}/{{kind}}",
                                 "../../../etc/passwd", "nope"],
                         ids=["a-name", "dot-dot-into-a", "a-id-prefix", "dot-slash-dot-dot", "out-of-the-dir",
                              "missing"])
async def test_org_b_cannot_send_org_as_directory_secrets_anywhere(secrets_dir, attacker, http_session, ref) -> None:
    """Every refusal reads like a missing secret, and no request leaves: the attacker's host hears nothing."""
    host, base = attacker
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(secrets_dir)))
    results = await runner.run(b_rows(base, ref))
    assert [(r.result.status, r.result.reason, r.result.error) for r in results] == \
        [(HealthStatus.DEGRADED, Reason.AUTH, MISSING)] * len(KINDS)
    assert host.received == []


async def test_the_attackers_host_would_have_heard_a_secret_b_owns(secrets_dir, attacker, http_session) -> None:
    """Control: with B's own secret the same rows reach the host and read healthy, so silence above means refusal."""
    host, base = attacker
    for kind in KINDS:
        (secrets_dir / str(ORG_B) / kind).write_text(FAKES[kind].credential(f"B-own-{kind}")[0])
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(secrets_dir)))
    results = await runner.run(b_rows(base, "{kind}"))
    assert {r.result.status for r in results} == {HealthStatus.HEALTHY}
    assert "B-own-fiken" in host.text()


async def test_org_a_keeps_using_its_own_secrets(secrets_dir, sim, http_session) -> None:
    """Ownership does not cost the owner anything: A's checks against honest vendors read healthy."""
    state, base = sim
    for kind in KINDS:
        state.secrets[f"a-{kind}"] = FAKES[kind].credential(f"PLANTED-A-{kind}")[1]
    runner = runner_for(AdapterContext(session=http_session, credentials=DirectoryCredentials(secrets_dir)))
    rows = [Integration(ORG_A, kind, FAKES[kind].config(base, f"a-{kind}"), kind) for kind in KINDS]
    results = await runner.run(rows)
    assert {r.integration_type: r.result.status for r in results} == {k: HealthStatus.HEALTHY for k in KINDS}
