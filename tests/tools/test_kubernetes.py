"""deploy/kubernetes/ cannot be applied here (no cluster), so it is proven offline: every manifest against the
Kubernetes schemas (kubernetes-validate, strict), the Prometheus Operator resources against a schema of the
fields we use, the PrometheusRule's rules with promtool, and its names against the exporter and the image."""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

import jsonschema
import kubernetes_validate
import pytest
import yaml

from exporter.cli import parse_args
from exporter.settings import Settings
from exporter.storage.credentials import DirectoryCredentials
from tests.conftest import require_tool
from tests.tools.test_compose import dockerfile_stages

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"

def load_generator() -> ModuleType:
    """deploy/kubernetes/generate.py under a name of its own (dashboards/generate.py is `generate` too)."""
    spec = importlib.util.spec_from_file_location("kubernetes_generate", KUBE / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load_generator()

KUSTOMIZATION = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
MANIFESTS = [(name, doc) for name in KUSTOMIZATION["resources"]
             for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]
CRDS = {"ServiceMonitor", "PrometheusRule"}  # Prometheus Operator's: not in kubernetes-validate's bundled schemas
# The oldest Kubernetes we claim (policy/v1 PDBs, restricted Pod Security labels) and the newest bundled.
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def kind(name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in MANIFESTS if d["kind"] == name]
    return doc


def json_patched(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """`doc` after the RFC 6902 `add` operations kustomize applies (the only operation the component uses)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add", op
        *parents, last = [int(p) if p.isdigit() else p for p in op["path"].strip("/").split("/")]
        target = functools.reduce(lambda node, key: node[key], parents, doc)
        if last == "-":
            target.append(op["value"])
        else:
            target[last] = op["value"]
    return doc


STATEFULSET = kind("StatefulSet")
POD = STATEFULSET["spec"]["template"]["spec"]
COMPONENT = KUBE / "credentials-directory"
WITH_DIRECTORY = json_patched(STATEFULSET, yaml.safe_load((COMPONENT / "statefulset-patch.yaml").read_text()))
CONTAINERS = POD["initContainers"] + WITH_DIRECTORY["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("name", list(generate.render()))
def test_generated_manifests_match_the_generator(name: str) -> None:
    assert (KUBE / name).read_text() == generate.render()[name], (
        f"deploy/kubernetes/{name} is out of date: run .venv/bin/python deploy/kubernetes/generate.py")


def test_the_kustomization_lists_every_manifest_in_the_folder() -> None:
    assert set(KUSTOMIZATION["resources"]) == {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name,doc", [(n, d) for n, d in MANIFESTS if d["kind"] not in CRDS],
                         ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"])
def test_every_manifest_validates_against_the_kubernetes_schemas_in_strict_mode(name: str, doc: dict,
                                                                                version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError naming the field


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_statefulset_with_the_credentials_directory_component_validates_too(version: str) -> None:
    component = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    assert [p["path"] for p in component["patches"]] == ["statefulset-patch.yaml"]
    kubernetes_validate.validate(WITH_DIRECTORY, version, strict=True)


async def test_the_mounted_secrets_items_lay_out_the_files_the_directory_provider_reads(tmp_path: Path) -> None:
    spec = WITH_DIRECTORY["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "credentials"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "credentials"]
    settings = Settings(credential_provider=env["EXPORTER_CREDENTIAL_PROVIDER"],
                        credentials_dir=env["EXPORTER_CREDENTIALS_DIR"])
    assert settings.credentials_dir == Path(mount["mountPath"]) and mount["readOnly"]
    for item in volume["secret"]["items"]:  # what the kubelet writes, under a stand-in for the mount path
        (tmp_path / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item["path"]).write_text(f"secret of {item['key']}\n")
        org_id, ref = item["key"].split(".", 1)
        assert item["path"] == f"{org_id}/{ref}"
        secret = await DirectoryCredentials(tmp_path).get(UUID(org_id), ref)
        assert secret.get_secret_value() == f"secret of {item['key']}"


def test_kubernetes_validate_strict_mode_refuses_a_field_that_does_not_exist() -> None:
    broken = yaml.safe_load(yaml.safe_dump(STATEFULSET))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


# The ServiceMonitor and PrometheusRule fields we use, as monitoring.coreos.com/v1 defines them; closed
# (additionalProperties: false) so a misspelt field fails here as strict mode fails the others.
def closed(properties: dict[str, Any], required: list[str] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


STR = {"type": "string"}
STR_MAP = {"type": "object", "additionalProperties": STR}
METADATA = closed({"name": STR, "labels": STR_MAP}, ["name"])
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                         r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
SECRET_KEY = closed({"name": STR, "key": STR, "optional": {"type": "boolean"}}, ["key"])
CRD_SCHEMAS = {
    "ServiceMonitor": closed({
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"}, "metadata": METADATA,
        "spec": closed({
            "selector": closed({"matchLabels": STR_MAP}, ["matchLabels"]),
            "endpoints": {"type": "array", "minItems": 1, "items": closed({
                "port": STR, "path": STR, "interval": DURATION, "scrapeTimeout": DURATION,
                "authorization": closed({"type": STR, "credentials": SECRET_KEY}, ["credentials"]),
            }, ["port"])},
        }, ["selector", "endpoints"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
    "PrometheusRule": closed({
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"}, "metadata": METADATA,
        "spec": closed({"groups": {"type": "array", "minItems": 1, "items": closed({
            "name": STR, "interval": DURATION,
            "rules": {"type": "array", "minItems": 1, "items": {"oneOf": [
                closed({"record": STR, "expr": STR, "labels": STR_MAP}, ["record", "expr"]),
                closed({"alert": STR, "expr": STR, "for": DURATION, "labels": STR_MAP, "annotations": STR_MAP,
                        "keep_firing_for": DURATION | {"minLength": 1}},  # NonEmptyDuration, prometheus-operator 0.66+
                       ["alert", "expr"]),
            ]}},
        }, ["name", "rules"])}}, ["groups"]),
    }, ["apiVersion", "kind", "metadata", "spec"]),
}


@pytest.mark.parametrize("crd", sorted(CRDS))
def test_prometheus_operator_resources_match_the_fields_their_crds_define(crd: str) -> None:
    jsonschema.validate(kind(crd), CRD_SCHEMAS[crd])


def test_the_crd_schema_refuses_a_misspelt_field() -> None:
    monitor = yaml.safe_load(yaml.safe_dump(kind("ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, CRD_SCHEMAS["ServiceMonitor"])


# The healthy-month SLO test checks 30 days of recorded figures, not the rules' wiring, and takes promtool the
# longest: it runs once, against its own rule file, in test_rules.
SOURCE_ONLY_TESTS = {"integration-health-slo-month.test.yml"}


@pytest.fixture(scope="module")
def extracted_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PrometheusRule's groups as a plain rules file, beside every alerts/*.test.yml pointed at it."""
    folder = tmp_path_factory.mktemp("prometheusrule")
    (folder / "rules.yml").write_text(yaml.safe_dump({"groups": kind("PrometheusRule")["spec"]["groups"]}))
    for test in (ROOT / "alerts").glob("*.test.yml"):
        if test.name in SOURCE_ONLY_TESTS:
            continue
        (folder / test.name).write_text(yaml.safe_dump(yaml.safe_load(test.read_text()) | {"rule_files": ["rules.yml"]}))
    return folder


def test_promtool_check_rules_accepts_the_prometheusrules_rules(extracted_rules: Path) -> None:
    proc = subprocess.run([require_tool("promtool", "prometheus"), "check", "rules", "rules.yml"],
                          capture_output=True, text=True, cwd=extracted_rules)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    alerts = sum(1 for f in generate.rule_files() for g in yaml.safe_load(f.read_text())["groups"]
                 for r in g["rules"])
    assert f"SUCCESS: {alerts} rules found" in proc.stdout


def test_every_alert_unit_test_passes_on_the_prometheusrules_rules(extracted_rules: Path) -> None:
    tests = sorted(p.name for p in extracted_rules.glob("*.test.yml"))
    assert tests, "alerts/ has promtool unit tests"
    proc = subprocess.run([require_tool("promtool", "prometheus"), "test", "rules", *tests],
                          capture_output=True, text=True, cwd=extracted_rules)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_prometheusrule_holds_every_rules_file_in_alerts() -> None:
    rules = [r for g in kind("PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    sources = [r for f in generate.rule_files() for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]
    assert rules == sources and len(generate.rule_files()) >= 1


def test_every_environment_variable_is_a_setting_the_exporter_reads() -> None:
    names = {e["name"] for c in CONTAINERS for e in c.get("env", [])}
    read = {"DATABASE_URL"} | {f"EXPORTER_{field.upper()}" for field in Settings.model_fields}
    assert names - read == set()
    assert {"EXPORTER_REPLICA_ID", "DATABASE_URL", "EXPORTER_API_TOKEN", "EXPORTER_METRICS_TOKEN"} <= names


def test_the_replica_id_is_the_pod_name_so_a_restarted_replica_keeps_its_leases() -> None:
    env = {e["name"]: e for e in POD["containers"][0]["env"]}
    assert env["EXPORTER_REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert STATEFULSET["kind"] == "StatefulSet" and STATEFULSET["spec"]["replicas"] >= 2


def test_secrets_come_by_reference_and_no_secret_is_in_the_folder() -> None:
    assert "Secret" not in {d["kind"] for _, d in MANIFESTS}
    for container in CONTAINERS:
        for e in container.get("env", []):
            if re.search(r"TOKEN|SECRET|PASSWORD|DATABASE_URL", e["name"]):
                assert "value" not in e and "secretKeyRef" in e["valueFrom"], e["name"]
    text = "".join(p.read_text() for p in KUBE.glob("*.yaml"))
    assert not re.search(r"postgres(ql)?://", text), "a DSN (and its password) belongs in the Secret"


def test_containers_run_the_images_commands_as_its_unprivileged_user_on_a_read_only_root() -> None:
    final = dockerfile_stages()[-1]
    uid = re.search(r"useradd .*--uid (\d+) exporter", " ".join(a for i, a in final if i == "RUN")).group(1)
    exposed = {int(a) for i, a in final if i == "EXPOSE"}
    assert POD["securityContext"]["runAsUser"] == int(uid) and POD["securityContext"]["runAsNonRoot"]
    for container in CONTAINERS:
        assert container["image"] == KUSTOMIZATION["images"][0]["name"]
        assert container["command"][0] == "integration-health"
        parse_args(container["command"][1:])  # exits (SystemExit) on an unknown command or flag
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
        assert context["capabilities"]["drop"] == ["ALL"]
    assert {p["containerPort"] for p in POD["containers"][0]["ports"]} == exposed
    env = {e["name"]: e.get("value") for e in POD["containers"][0]["env"]}
    assert int(env["EXPORTER_PORT"]) in exposed


def test_the_image_tag_is_the_packaged_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert KUSTOMIZATION["images"][0]["newTag"] == version


def test_probes_ask_endpoints_the_app_serves() -> None:
    served = set(re.findall(r'add_get\("(/[a-z]+)"', (ROOT / "exporter/web/app.py").read_text()))
    probes = {k: v["httpGet"]["path"] for k, v in POD["containers"][0].items() if k.endswith("Probe")}
    assert probes == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    assert set(probes.values()) <= served


def test_the_pod_gets_longer_to_stop_than_the_exporters_shutdown() -> None:
    grace = Settings.model_fields["check_timeout_seconds"].default + 5  # the running cycle's grace (web/app.py), then as long to flush
    assert POD["terminationGracePeriodSeconds"] >= 2 * grace + 10


def test_services_budget_and_monitor_select_the_statefulsets_pods() -> None:
    pod_labels = STATEFULSET["spec"]["template"]["metadata"]["labels"]
    services = {d["metadata"]["name"]: d for _, d in MANIFESTS if d["kind"] == "Service"}
    assert services[STATEFULSET["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    for doc in [*services.values(), kind("PodDisruptionBudget")]:
        selector = doc["spec"]["selector"].get("matchLabels", doc["spec"]["selector"])
        assert selector.items() <= pod_labels.items(), doc["metadata"]["name"]
    port_names = {p["name"] for p in POD["containers"][0]["ports"]}
    monitor = kind("ServiceMonitor")["spec"]
    (scraped,) = [s for s in services.values()
                  if monitor["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert {p["targetPort"] for p in scraped["spec"]["ports"]} <= port_names
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in scraped["spec"]["ports"]}
    # Prometheus Operator names the job after the Service: the alert rules expect job="integration-health"
    assert scraped["metadata"]["name"] == "integration-health"
    assert 'job="integration-health"' in (KUBE / "prometheusrule.yaml").read_text()


def test_dashboards_are_config_maps_for_grafanas_sidecar() -> None:
    maps = [d for n, d in MANIFESTS if n == "dashboards.yaml"]
    boards = {p.name: p.read_text() for p in generate.dashboard_files()}
    assert {k: v for m in maps for k, v in m["data"].items()} == boards
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        # kubectl apply keeps a copy in an annotation limited to 256 KiB
        assert len(yaml.safe_dump(m).encode()) < 256 * 1024
