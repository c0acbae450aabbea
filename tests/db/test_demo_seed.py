"""The demo seed (also the compose stack's seed-demo) follows the ownership convention, and the service reads
its secrets through the vault function as service_role."""

from __future__ import annotations

from exporter.core.model import HealthStatus, secret_name
from exporter.demo.seed import ACME, DEMO, DEMO_ORGS, seed, simulator_state
from exporter.demo.simulator import create_app as create_simulator
from exporter.services import open_services
from tests.helpers import settings_for


async def test_demo_secrets_are_named_under_their_orgs_and_the_service_reads_them(db_dsn, admin,
                                                                                   aiohttp_server) -> None:
    """Acme reads all healthy only if each of its five secrets resolved for Acme and reached its fake vendor."""
    state = simulator_state()
    server = await aiohttp_server(create_simulator(state), access_log=None)
    await seed(admin, str(server.make_url("")).rstrip("/"))
    names = {r["name"] for r in await admin.fetch("SELECT name FROM vault.secrets")}
    assert names == {secret_name(i.org_id, i.tenant) for i in DEMO}
    assert {name.split("/", 1)[0] for name in names} == {str(org) for org in DEMO_ORGS}
    settings = settings_for(db_dsn, credential_provider="supabase-vault")
    async with open_services(settings, db_dsn, shared=False) as services:
        results = await services.scheduler.run_health_checks(ACME)
    assert {r.integration_type: r.result.status for r in results} == {
        i.integration_type: HealthStatus.HEALTHY for i in DEMO if i.org_id == ACME}
