"""docker-compose.yml cannot run here (no Docker engine), so its promises are checked statically."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.cli import parse_args
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_every_mounted_path_exists_in_the_repository() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if s.get("image") == "integration-health:local"])
def test_every_service_command_is_a_valid_cli_invocation(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[0] == "integration-health"
    parse_args(command[1:])  # exits (SystemExit) on an unknown command or flag


def test_published_ports_do_not_collide() -> None:
    ports = [p.split(":")[0] for s in SERVICES.values() for p in s.get("ports", [])]
    assert len(ports) == len(set(ports))


def test_long_running_services_have_healthchecks() -> None:
    for name in ("postgres", "simulator", "exporter", "prometheus", "alertmanager", "grafana"):
        assert "healthcheck" in SERVICES[name], name


def test_no_secret_is_written_in_the_file_and_env_example_names_each() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for match in re.finditer(r"^\s+[A-Z_]*(PASSWORD|TOKEN|SECRET)[A-Z_]*:\s*(\S+)", text, re.M):
        assert match.group(2).startswith("${"), match.group(0)
    used = set(re.findall(r"\$\{(\w+)", text))
    example = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example


def test_prometheus_config_is_valid_with_the_repos_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
    config = (ROOT / "deploy/prometheus.yml").read_text().replace(
        "/etc/prometheus/rules/integration-health.rules.yml", str(ROOT / "alerts/integration-health.rules.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_runs_the_cli_as_an_unprivileged_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER exporter" in dockerfile
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.M).group(1)
    assert shlex.split(cmd.replace('"', "").strip("[]").replace(",", " "))[:2] == ["integration-health", "serve"]
