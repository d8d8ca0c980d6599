"""The Kubernetes manifests without a cluster (none can run here): the base and every overlay
rendered as `kubectl apply -k` renders them (kubectl's built-in Kustomize), every object and the
training Job template validated against the schema of a pinned Kubernetes version
(kubernetes-validate, strict: no unknown fields), and the objects checked against the compose
and Swarm stacks: the same images, ports, roles and placer settings."""

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from scripts.demo import compose_settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = [
    "base",
    *(f"overlays/{d.name}" for d in sorted((KUBERNETES / "overlays").iterdir())),
]
TEMPLATES = sorted((KUBERNETES / "jobs").glob("*.yaml"))
KUBERNETES_VERSION = "1.31.0"  # the oldest minor the manifests promise to apply to
COMPOSE = yaml.safe_load((ROOT / "deploy" / "compose.services.yaml").read_text())["services"]
PORTS = compose_settings()


def render(kustomization: str) -> list[dict]:
    if not shutil.which("kubectl"):
        reason = "kubectl (with its built-in Kustomize) is not installed"
        if os.environ.get("STRAIGHTLINE_REQUIRE_DOCKER") == "1":  # CI: this machine's kind has it
            pytest.fail(f"STRAIGHTLINE_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def objects(rendered: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in rendered if o["kind"] == kind}


def container(workload: dict) -> dict:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return only


def env_of(workload: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(workload).get("env", [])}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid_for_the_pinned_kubernetes(kustomization):
    rendered = render(kustomization)
    assert rendered
    for document in rendered:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "straightline"
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "straightline"


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.name for t in TEMPLATES])
def test_the_training_job_template_is_valid_and_asks_for_a_gpu(template):
    [job] = [d for d in yaml.safe_load_all(template.read_text()) if d]
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    trainer = container(job)
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        trainer["image"].split(":")[0]
        == COMPOSE["devrunner"]["environment"]["STRAIGHTLINE_DEVRUNNER_IMAGES"].split(":")[0]
    )
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_workloads_match_the_compose_stack():
    rendered = render("base")
    workloads = objects(rendered, "StatefulSet")
    services = objects(rendered, "Service")
    for name, port_name in [
        ("placer", "PLACER"),
        ("adapter-flask", "ADAPTER_FLASK"),
        ("adapter-serverless", "ADAPTER_SERVERLESS"),
    ]:
        workload = workloads[name]
        assert container(workload)["image"].split(":")[0] == COMPOSE[name]["image"].split(":")[0]
        ports = {p["name"]: p["containerPort"] for p in container(workload)["ports"]}
        assert ports["grpc"] == int(PORTS[f"{port_name}_PORT"])
        assert ports["metrics"] == int(PORTS[f"{port_name}_METRICS_PORT"])
        assert {p["name"]: p["port"] for p in services[name]["spec"]["ports"]} == ports
        assert services[name]["spec"]["clusterIP"] == "None"  # clients see every pod
        env = env_of(workload)
        # Mutual TLS everywhere, from the Secret mounted where the variables say.
        assert env["STRAIGHTLINE_TLS_CERT"].startswith("/etc/straightline/tls/")
        [tls] = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
        assert tls["secret"]["secretName"] == f"straightline-tls-{name}"
        probe = container(workload)["readinessProbe"]["exec"]["command"]
        assert probe[-1] == f"127.0.0.1:{ports['grpc']}"
        assert "limits" in container(workload)["resources"]
    placers = workloads["placer"]
    assert placers["spec"]["replicas"] == 2
    assert objects(rendered, "PodDisruptionBudget")["placer"]["spec"]["minAvailable"] == 1
    for name in ("adapter-flask", "adapter-serverless"):
        heartbeats_to = env_of(workloads[name])["STRAIGHTLINE_ADAPTER_PLACER"].split(",")
        assert [a.split(".")[0] for a in heartbeats_to] == ["placer-0", "placer-1"]


def test_the_placers_settings_are_the_swarm_stacks():
    [settings] = objects(render("base"), "ConfigMap").values()
    assert settings["data"]["placer.toml"] == (ROOT / "deploy/swarm/placer.toml").read_text()


def test_network_policies_allow_only_the_roles_calls():
    policies = objects(render("base"), "NetworkPolicy")
    assert policies["default-deny"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
    }
    adapters = policies["adapters"]["spec"]
    callers = [rule["from"] for rule in adapters["ingress"] if 50061 in ports_of(rule)]
    assert callers == [[{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "placer"}}}]]
    placer_egress = [ports_of(rule) for rule in policies["placer"]["spec"]["egress"]]
    assert {50061, 50063} in placer_egress


def ports_of(rule: dict) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}
