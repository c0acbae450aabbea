"""A scripted 24-hour day per scenario through the real scheduler, the real rules and Alertmanager's
inhibition: no false alerts, none missed, one notification per fault, fired within 32 minutes, resolved
within an hour of recovery (within a cycle when a sync success shows it).

The machinery is in tests/support/timeline.py (the day) and tests/support/alerting.py (rules and
notifications). `python -m tests.e2e.test_timeline [--readme]` prints the table (and writes it into README.md).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.support.alerting import (
    Row,
    alerting_rules,
    change_points,
    inhibit_rules,
    notifications,
    read_firing,
    rules_test,
    run_promtool,
    score,
    series_by_minute,
)
from tests.support.timeline import (
    DAY,
    SLOW_MS,
    T0,
    VICTIM,
    Event,
    Fault,
    Scenario,
    credential_expires_in,
    database,
    maintenance,
    restart,
    run_day,
    secret_expires,
    secret_renewed,
    sync_run,
    vault,
    vendor,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "alerts").glob("*.rules.yml"))  # all Prometheus loads: the SLO burn alerts too
ALERTMANAGER = ROOT / "alerts" / "alertmanager.yml"
UNREACHABLE, THROTTLED = frozenset({"IntegrationUnreachable"}), frozenset({"IntegrationRateLimited"})
REFUSED = frozenset({"IntegrationCredentialsRejected"})
VENDOR_OUTAGE, HTTP_VENDOR = frozenset({"IntegrationVendorOutage"}), {"integration_type": "http"}
EXPIRING = frozenset({"IntegrationCredentialExpiring"})  # the warning alone: a critical one would be false


def flapping(start: int, end: int, failing: Event | None = None) -> dict[int, list]:
    """Slow (or `failing`) and fine on alternate cycles from `start`, fine from `end`."""
    failing = failing or vendor("slow", ms=SLOW_MS)
    events = {m: [failing if (m - start) // 15 % 2 == 0 else vendor("healthy")] for m in range(start, end, 15)}
    return events | {end: [vendor("healthy")]}


# Minutes from 12:00 UTC on Saturday 24 October 2026; Europe/Oslo falls back at 01:00 UTC (minute 780).
SCENARIOS = [
    Scenario("steady"),
    Scenario("single transient failures", {300: [vendor("server_error")], 301: [vendor("healthy")],
                                           900: [vendor("rate_limited")], 901: [vendor("healthy")]}),
    Scenario("vendor down 2 h", {120: [vendor("server_error")], 240: [vendor("healthy")]},
             [Fault("vendor down", 120, 240, UNREACHABLE)]),
    Scenario("outage spanning an exporter restart",
             {360: [vendor("server_error")], 425: [restart(gap=2)], 480: [vendor("healthy")]},
             [Fault("vendor down", 360, 480, UNREACHABLE)]),
    Scenario("throttled 3 h", {600: [vendor("rate_limited")], 780: [vendor("healthy")]},
             [Fault("throttled", 600, 780, THROTTLED)]),
    Scenario("slowness flapping 5 h", flapping(180, 480),
             [Fault("flapping", 180, 480, frozenset({"IntegrationFlapping"}))]),
    # never two failures in a row, so never IntegrationUnreachable: the SLO's fast burn alert pages (and
    # inhibits the flapping warning the same failures raise)
    Scenario("vendor failing every other check 3 h", flapping(420, 600, vendor("server_error")),
             [Fault("intermittent failures", 420, 600, frozenset({"IntegrationErrorBudgetBurnFast"}))]),
    Scenario("database down 30 min", {720: [database(True)], 750: [database(False)]},
             [Fault("database down", 720, 750, frozenset({"IntegrationHealthPersistFailing"}), labels={})]),
    Scenario("vault down 30 min", {1020: [vault(True)], 1050: [vault(False)]}),  # the last secret read carries it
    Scenario("vault down 3 h", {600: [vault(True)], 780: [vault(False)]},
             [Fault("vault down", 600, 780, frozenset({"IntegrationHealthCredentialsUnavailable"}), labels={},
                    max_fire=60 + 10 + 5)]),  # checks go on with the last secret for an hour: nothing to say before
    Scenario("vendor down 5 h, vault down 3 h inside it",
             {120: [vendor("server_error")], 150: [vault(True)], 330: [vault(False)], 420: [vendor("healthy")]},
             [Fault("vendor down", 120, 420, UNREACHABLE),
              Fault("vault down", 150, 330, frozenset({"IntegrationHealthCredentialsUnavailable"}), labels={},
                    max_fire=60 + 10 + 5)]),
    Scenario("DST night, sync at 02:30 Europe/Oslo", {753: [sync_run(750, 750, 753)]},
             victim={"health_mode": "passive", "sync": {"cron": "30 2 * * *", "timezone": "Europe/Oslo"}},
             seed_runs=[sync_run(-690, -690, -687)]),
    Scenario("vendor down in a maintenance window and after it",
             {60: [maintenance(120, 240)], 150: [vendor("server_error")], 300: [vendor("healthy")]},
             [Fault("vendor still down after the window", 240, 300, UNREACHABLE)]),
    Scenario("vendor slow through a 3 h maintenance window",  # degraded for hours, but inside the window
             {0: [maintenance(120, 300)], 130: [vendor("slow", ms=SLOW_MS)], 290: [vendor("healthy")]}),
    Scenario("sync success during backoff",
             {120: [vendor("server_error")], 240: [vendor("healthy")], 248: [sync_run(245, 245, 248)]},
             [Fault("vendor down", 120, 240, UNREACHABLE, max_resolve=16)],
             victim={"sync": {"cron": "5 16 * * *", "timezone": "UTC"}}, seed_runs=[sync_run(-1195, -1195, -1192)]),
    Scenario("secret expired, renewed 2 h later", {120: [secret_expires()], 240: [secret_renewed()]},
             [Fault("secret expired", 120, 240, REFUSED, labels=VICTIM | {"integration_type": "dynamics365"})],
             victim_type="dynamics365"),
    # The victim and 5 more organisations on one vendor, the bystander on another tenant of the type:
    # one vendor alert, no per-org page, resolved in the cycle the canaries see the vendor back.
    Scenario("vendor-wide outage 3 h, 6 orgs", {127: [vendor("server_error")], 307: [vendor("healthy")]},
             [Fault("vendor down for everyone", 127, 307, VENDOR_OUTAGE, labels=HTTP_VENDOR, max_resolve=16)],
             peers=5),  # few, so the scenarios sharing one event loop keep their latencies
    Scenario("credential expires in 10 days", {0: [credential_expires_in(days=10)]},
             [Fault("credential expiring", 0, DAY, EXPIRING, labels=VICTIM | {"integration_type": "dynamics365"})],
             victim_type="dynamics365"),
]


async def evaluate(scenarios: list[Scenario], workdir: Path) -> list[Row]:
    """Run every scenario's day, evaluate the rules over all of them with promtool, count notifications."""
    scrapes = await asyncio.gather(*(run_day(s) for s in scenarios))  # a slow vendor's sleeps overlap
    days = {s.name: series_by_minute(day, T0) for s, day in zip(scenarios, scrapes, strict=True)}
    rules = alerting_rules(RULES, workdir)
    reports = await asyncio.to_thread(run_promtool, [rules_test(rules, n, series, dict.fromkeys(range(DAY)))
                                                     for n, series in days.items()], workdir, "read")
    firing = {}
    for report in reports:
        problems = re.sub(r"\{[^{}]*\}", "{}", report.stderr).lower()  # label sets name alerts (…ErrorBudget…)
        assert "Unit Testing" in report.stdout and "error" not in problems, report.stderr[:3000]
        firing |= read_firing(report.stderr)
    changes = {n: change_points(firing.get(n, {}), DAY) for n in days}
    checks = [rules_test(rules, n, series, changes[n]) for n, series in days.items() if changes[n]]
    for verified in await asyncio.to_thread(run_promtool, checks, workdir, "verify"):
        assert verified.returncode == 0, f"promtool disagrees with what its report said:\n{verified.stderr[:3000]}"
    config = yaml.safe_load(ALERTMANAGER.read_text())
    rules, group_by = inhibit_rules(config), config["route"]["group_by"]
    return [score(s, notifications(firing.get(s.name, {}), rules, group_by, DAY)) for s in scenarios]


def table(rows: list[Row]) -> str:
    lines = ["| scenario | faults | notifications | false | missed | minutes to fire | minutes to resolve after "
             "recovery |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = f"{r.scenario} (**pending**: {r.pending})" if r.pending else r.scenario
        lines.append(f"| {name} | {r.faults} | {r.notifications} | {r.false} | {r.missed} | {_minutes(r.fire)} | "
                     f"{_minutes(r.resolve)} |")
    return "\n".join(lines)


def _minutes(values: list[int]) -> str:
    return ", ".join(map(str, values)) or "–"


@pytest.fixture(scope="module")
async def rows(tmp_path_factory) -> dict[str, Row]:
    assert shutil.which("promtool"), "promtool not found: apt-get install prometheus"
    result = await evaluate(SCENARIOS, tmp_path_factory.mktemp("timeline"))
    print("\n" + table(result))
    return {r.scenario: r for r in result}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_scenario_alerts_once_per_fault_on_time_and_never_falsely(rows, scenario: Scenario) -> None:
    row = rows[scenario.name]
    assert (row.false, row.missed, row.duplicates, row.late) == (0, 0, 0, []), row


def test_the_readme_shows_the_table_this_harness_produces(rows) -> None:
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"<!-- timeline table -->\n(.*?)\n<!-- /timeline table -->", readme, re.S)
    assert shown, "README.md has no timeline table"
    assert shown.group(1) == table([rows[s.name] for s in SCENARIOS])


if __name__ == "__main__":  # print the table; with --readme, also write it into README.md
    import sys
    import tempfile

    shown = table(asyncio.run(evaluate(SCENARIOS, Path(tempfile.mkdtemp(prefix="timeline-")))))
    print(shown)
    if "--readme" in sys.argv:
        readme = ROOT / "README.md"
        readme.write_text(re.sub(r"(<!-- timeline table -->\n).*?(<!-- /timeline table -->)",
                                 lambda m: m.group(1) + shown + "\n" + m.group(2), readme.read_text(), flags=re.S))
