"""Write the SLO recording and burn-rate alerting rules from the objectives in alerts/slo.yml.

    .venv/bin/python alerts/generate_slo.py          # rewrite alerts/integration-health-slo.rules.yml
    .venv/bin/python alerts/generate_slo.py --check  # exit 1 if the committed rules are out of date

The objectives live in one place (slo.yml); the rules only ever read them as the recorded series
`integration_health:slo_objective:ratio`, so an override per integration type changes one recording rule
and nothing else. README.md "SLOs and error budgets" explains the choices made here.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "slo.yml"
RULES = HERE / "integration-health-slo.rules.yml"
RUNBOOKS = "https://github.com/integration-health/integration-health/blob/main/README.md#"

BY = "org_id, integration_type"
OBJECTIVE = "integration_health:slo_objective:ratio"
BUDGET_REMAINING = "integration_health:slo_error_budget_remaining:ratio"
SHORT = "5m"
DERIVED = ("30m", "1h", "6h")  # from the recorded 5-minute ratio, every minute: the burn alerts read them
LONG = ("3d", "30d")  # from the recorded hourly ratio, every 5 minutes: the dashboard and the error budget read them
HOURLY = "1h"
PERIOD = "30d"  # the SLO period the burn factors below are computed for
TYPE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def ratio(window: str) -> str:
    return f"integration_health:slo_errors:ratio_rate{window}"


def changes(window: str) -> str:
    """How often the integration became or stopped being unreachable: 3 or more is two separate failures."""
    return f"integration_health:slo_unreachable_changes:count{window}"


def intermittent(window: str) -> str:
    """The error ratio while it burns a burn alert's factor in separate failures (IntegrationFlapping defers to
    it for 6 hours); absent otherwise."""
    return f"integration_health:slo_errors_intermittent:ratio_rate{window}"


def streak(window: str) -> str:
    """The most failed checks in a row: 2 or more is a confirmed outage, IntegrationUnreachable's page."""
    return f"integration_health:slo_failure_streak:max{window}"


@dataclass(frozen=True)
class Burn:
    """A multi-window, multi-burn-rate alert (Google SRE workbook, ch. 5): it fires while both windows burn
    the budget `factor` times faster than the objective allows."""

    alert: str
    severity: str
    factor: float
    long: str
    short: str
    spent: str  # the share of the 30-day budget `factor` burns in `long`: factor × long / 30 d
    keep_firing_for: str | None = None


BURNS = (
    # A 15-minute check outlives the 5-minute window: a burn that fails every other check would clear and fire
    # again with each check. Held for the slow alert's short window, it stays one alert until the failures stop
    # and outlasts the slow alert it inhibits, which would otherwise notify when the page clears.
    Burn("IntegrationErrorBudgetBurnFast", "critical", 14.4, "1h", "5m", "2 %", keep_firing_for="30m"),
    Burn("IntegrationErrorBudgetBurnSlow", "warning", 6, "6h", "30m", "5 %"),
)


@dataclass(frozen=True)
class Objectives:
    """The availability objective of every integration: `default`, unless its type has its own."""

    default: float
    types: Mapping[str, float] = field(default_factory=dict)


def load_objectives(text: str, known_types: Iterable[str]) -> Objectives:
    """Parse slo.yml, refusing what would make a rule meaningless, with the key and the fix in the message."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or set(data) - {"default", "types"}:
        raise ValueError("slo.yml: expected the keys `default` and `types` only")
    types = data.get("types") or {}
    if not isinstance(types, dict):
        raise ValueError("slo.yml: types: expected a mapping of integration type to objective")
    known = set(known_types)
    for name in types:
        if not isinstance(name, str) or not TYPE_NAME.match(name) or name not in known:
            raise ValueError(f"slo.yml: types.{name}: not an integration type (known: {', '.join(sorted(known))})")
    return Objectives(_objective("default", data.get("default")),
                      {name: _objective(f"types.{name}", value) for name, value in sorted(types.items())})


def _objective(key: str, value: Any) -> float:
    fastest = max(b.factor for b in BURNS)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"slo.yml: {key}: expected a number such as 0.99, got {value!r}")
    if not 1 - 1 / fastest < value < 1:
        raise ValueError(f"slo.yml: {key}: {value} must be below 1 and above {1 - 1 / fastest:.4f} "
                         f"(the fast alert fires at {fastest}× the error budget, which must stay below 100 %)")
    return float(value)


def objective_rules(objectives: Objectives) -> list[dict[str, Any]]:
    """One recording rule for the default and one per overridden type, all writing the same series."""
    overridden = "|".join(objectives.types)
    default_selector = f'{{integration_type!~"{overridden}"}}' if overridden else ""
    rules = [{"record": OBJECTIVE,
              "expr": f"{objectives.default:g} * group by ({BY}) (integration_health_status{default_selector})"}]
    for name, value in objectives.types.items():
        rules.append({"record": OBJECTIVE,
                      "expr": f'{value:g} * group by ({BY}) (integration_health_status{{integration_type="{name}"}})'})
    return rules


def recording_rules(objectives: Objectives) -> list[dict[str, Any]]:
    short = {"record": ratio(SHORT), "expr": (
        f"max by ({BY}) (\n"
        f"  avg_over_time((\n"
        f'    integration_health_status{{status="unreachable"}}\n'
        f"    unless on ({BY}) integration_health_maintenance == 1\n"
        f"  )[{SHORT}:1m])\n"
        f")\n")}
    derived = [{"record": ratio(w), "expr": f"avg_over_time({ratio(SHORT)}[{w}])"} for w in DERIVED]
    guards = [rule for b in BURNS for rule in (
        {"record": changes(b.long),
         "expr": f'max by ({BY}) (changes(integration_health_status{{status="unreachable"}}[{b.long}]))'},
        {"record": streak(b.long),
         "expr": f"max by ({BY}) (max_over_time(integration_health_consecutive_failures[{b.long}]))"})]
    return [*objective_rules(objectives), short, *derived, *guards, *(intermittent_rule(b) for b in BURNS)]


def budget_rules() -> list[dict[str, Any]]:
    # The hourly ratio read once an hour: 720 samples a series for 30 days instead of 43,200 (over Prometheus's
    # 50 million samples per query from about 1,150 integrations), at the price of lagging up to an hour.
    long = [{"record": ratio(w), "expr": f"avg_over_time({ratio(HOURLY)}[{w}:{HOURLY}])"} for w in LONG]
    budget = {"record": BUDGET_REMAINING,
              "expr": f"1 - {ratio(PERIOD)} / on ({BY}) (1 - {OBJECTIVE})"}
    return [*long, budget]


def burning(burn: Burn, window: str) -> str:
    return f"{ratio(window)}\n  > on ({BY}) {burn.factor:g} * (1 - {OBJECTIVE})"


def intermittent_rule(burn: Burn) -> dict[str, Any]:
    """The long window's half of the alert: burning `factor`× in two or more separate failures, none confirmed."""
    return {"record": intermittent(burn.long), "expr": (
        f"{burning(burn, burn.long)}\n"
        f"and on ({BY})\n{changes(burn.long)} >= 3\n"
        f"unless on ({BY})\n{streak(burn.long)} >= 2\n")}


def burn_alert(burn: Burn) -> dict[str, Any]:
    expr = (f"{intermittent(burn.long)}\n"
            f"and on ({BY})\n{burning(burn, burn.short)}\n"
            f"unless on ({BY}) integration_health_maintenance == 1\n")
    rule: dict[str, Any] = {"alert": burn.alert, "expr": expr}
    if burn.keep_firing_for:
        rule["keep_firing_for"] = burn.keep_firing_for
    rule["labels"] = {"severity": burn.severity}
    rule["annotations"] = {
        "summary": (f"{{{{ $labels.integration_type }}}} of org {{{{ $labels.org_id }}}} burns its error budget "
                    f"{burn.factor:g}× too fast"),
        "description": (
            f"Organisation {{{{ $labels.org_id }}}}'s {{{{ $labels.integration_type }}}} integration was unreachable "
            f"{{{{ $value | humanizePercentage }}}} of the last {burn.long} (and still in the last {burn.short}), in "
            f"separate failures rather than one outage: at that rate it spends {burn.spent} of its 30-day error "
            f"budget in {burn.long}. The budget left is integration_health:slo_error_budget_remaining:ratio."),
        "runbook_url": RUNBOOKS + burn.alert.lower(),
    }
    return rule


def rules(objectives: Objectives) -> dict[str, Any]:
    # The burn alerts share the group of the ratios they read: rules of one group run in order, so an alert sees
    # this evaluation's ratios (groups run concurrently, and an alert in another would see this or the last one's).
    return {"groups": [
        {"name": "integration-health-slo", "interval": "1m",
         "rules": [*recording_rules(objectives), *(burn_alert(b) for b in BURNS)]},
        {"name": "integration-health-slo-budget", "interval": "5m", "rules": budget_rules()},
    ]}


HEADER = """\
# GENERATED by alerts/generate_slo.py from alerts/slo.yml: edit those, then run
#     .venv/bin/python alerts/generate_slo.py
# Availability SLOs: the error ratio of each integration is the share of the time it was unreachable
# (degraded counts as available), maintenance windows and scrape gaps left out of both sides. Only the
# 5-minute ratio reads the raw gauge; every longer window is the average of a recorded ratio (3 and 30
# days of the hourly one, sampled hourly, so a 30-day window costs 720 samples per integration).
# Runbooks: README.md#slos-and-error-budgets.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks and long descriptions folded, as in the hand-written rule file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else ">" if len(value) > 100 and " " in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(objectives: Objectives) -> str:
    return HEADER + yaml.dump(rules(objectives), Dumper=_Dumper, sort_keys=False, width=110, indent=2,
                              allow_unicode=True)


def known_types() -> list[str]:
    sys.path.insert(0, str(HERE.parent))
    from exporter.adapters import ADAPTERS

    return list(ADAPTERS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    try:
        text = render(load_objectives(CONFIG.read_text(), known_types()))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        if not RULES.exists() or RULES.read_text() != text:
            print(f"out of date: {RULES.name}: run .venv/bin/python alerts/generate_slo.py", file=sys.stderr)
            return 1
        return 0
    RULES.write_text(text)
    print(f"wrote {RULES.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
