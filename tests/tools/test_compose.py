"""docker-compose.yml cannot run here (no Docker engine), so its promises are checked statically."""

from __future__ import annotations

import json
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
PROMETHEUS = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), one list per FROM stage."""
    stages: list[list[tuple[str, str]]] = []
    for line in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            if instruction.upper() == "FROM":
                stages.append([])
            stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def copy_arguments(arguments: str) -> tuple[list[str], list[str]]:
    """COPY's flags (--from=…, --chown=…) and its paths, sources first, destination last (shell or JSON form)."""
    words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    return [w for w in words if w.startswith("--")], [w for w in words if not w.startswith("--")]


def compose_paths(service: dict) -> list[str]:
    """The repository paths a service names: bind-mounted files, its build context and Dockerfile, env files."""
    paths = []
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith("."):
            paths.append(source)
    build = service.get("build")
    if build is not None:
        build = {"context": build} if isinstance(build, str) else build
        paths += [build["context"], f"{build['context']}/{build.get('dockerfile', 'Dockerfile')}"]
    env_files = service.get("env_file", [])
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        paths.append(env_file if isinstance(env_file, str) else env_file["path"])
    return paths


def test_every_path_the_compose_file_names_exists_in_the_repository() -> None:
    named = {(name, path) for name, service in SERVICES.items() for path in compose_paths(service)}
    assert {path for _, path in named} >= {".", "./Dockerfile", "./deploy/prometheus.yml"}  # the parser sees them
    for name, path in sorted(named):
        assert (ROOT / path).exists(), f"{name} names missing {path}"


def test_every_dockerfile_copy_source_exists_in_the_repository() -> None:
    sources = []
    for stage in dockerfile_stages():
        for instruction, arguments in stage:
            flags, paths = copy_arguments(arguments) if instruction in ("COPY", "ADD") else ([], [])
            if not any(f.startswith("--from=") for f in flags):  # --from copies from a stage, not the repo
                sources += paths[:-1]
    assert {"pyproject.toml", "exporter", "migrations"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists() or any(ROOT.glob(source)), f"Dockerfile copies missing {source}"


def test_the_image_installs_the_wheel_built_in_its_build_stage() -> None:
    *builders, final = dockerfile_stages()
    assert any(i == "RUN" and "pip wheel" in a for stage in builders for i, a in stage)
    copies = [copy_arguments(a)[0] for i, a in final if i in ("COPY", "ADD")]
    assert copies and all(any(f.startswith("--from=") for f in flags) for flags in copies), \
        "the final stage must take only the built wheel, not the source tree"
    assert any(i == "RUN" and re.search(r"pip install .*\.whl", a) for i, a in final)


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


def test_the_exporter_is_reachable_only_on_the_compose_network() -> None:
    exporter = SERVICES["exporter"]
    assert "ports" not in exporter and "network_mode" not in exporter, "/metrics and the API stay off the host"
    published = [p for s in SERVICES.values() for p in s.get("ports", []) if str(p).split(":")[-1] == "9464"]
    assert published == []
    assert PROMETHEUS["scrape_configs"][0]["static_configs"][0]["targets"] == ["exporter:9464"]


def test_prometheus_scrapes_with_the_same_metrics_token_the_exporter_requires() -> None:
    job = PROMETHEUS["scrape_configs"][0]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
    assert "metrics_token" in SERVICES["prometheus"]["secrets"]
    assert COMPOSE["secrets"]["metrics_token"] == {"environment": "EXPORTER_METRICS_TOKEN"}
    assert SERVICES["exporter"]["environment"]["EXPORTER_METRICS_TOKEN"].startswith("${EXPORTER_METRICS_TOKEN:?")


def test_prometheus_config_is_valid_with_the_repos_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
    (tmp_path / "metrics_token").write_text("a-token-for-promtool-to-find\n")
    mounted = [v.split(":") for v in SERVICES["prometheus"]["volumes"] if v.startswith("./alerts")]
    assert mounted == [["./alerts", "/etc/prometheus/rules", "ro"]], "Prometheus must see every file in alerts/"
    config = (ROOT / "deploy/prometheus.yml").read_text().replace(
        "/etc/prometheus/rules/", str(ROOT / "alerts") + "/"
    ).replace("/run/secrets/metrics_token", str(tmp_path / "metrics_token"))
    (tmp_path / "prometheus.yml").write_text(config)
    proc = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rule_file in ROOT.glob("alerts/*.rules.yml"):  # the glob loads each of them, the generated SLO rules too
        assert f"Checking {rule_file}\n  SUCCESS" in proc.stdout, proc.stdout


def test_dockerfile_serves_a_valid_cli_invocation_as_an_unprivileged_user() -> None:
    final = dockerfile_stages()[-1]
    assert [a for i, a in final if i == "USER"][-1] == "exporter"
    command = json.loads([a for i, a in final if i == "CMD"][-1])  # exec form: signals reach the process
    assert command[:2] == ["integration-health", "serve"]
    parse_args(command[1:])  # exits (SystemExit) on an unknown command or flag


def test_the_exporter_gets_longer_to_stop_than_its_own_shutdown_grace() -> None:
    grace = SERVICES["exporter"].get("stop_grace_period", "10s")  # Docker's default is 10 s
    assert grace.endswith("s") and int(grace[:-1]) >= 10 + 5 + 10, "the check timeout + 5 s, then the flush"
