"""The Swarm stack (deploy/stack.yaml) on a single-node swarm of this machine's engine, from
`docker stack deploy` to `docker stack rm`: every service healthy, the demo's stream trained,
packaged and served through both placers, a killed task replaced by Swarm and the placers'
view following it, and nothing left behind. The swarm is made here (and left at the end) when
the engine is not in one already."""

import subprocess
from pathlib import Path

import docker
import pytest

from scripts.demo import MODEL_NAME, compose_settings
from scripts.localstack import serving_reports, set_policy
from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common import devcerts
from straightline_inference.adapter.containers import free_ports
from tests.support.deployed import DeployedStack
from tests.support.models import image_bytes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
STACK_FILE = ROOT / "deploy" / "stack.yaml"
NAMESPACE_LABEL = "com.docker.stack.namespace"
FLASK = types_pb2.PLATFORM_FLASK


class SwarmStack(DeployedStack):
    def __init__(self, tmp_path: Path, otlp_port: int):
        super().__init__(
            tmp_path,
            otlp_port,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_port}",
            DOCKER_SWARM_BASE_PORT=str(free_ports(1)[0]),
        )
        # `docker stack deploy` reads no .env: what the test does not set comes from it.
        self.env = {**compose_settings(), **self.env}
        self.name = f"sl-test-{self.suffix}"
        devcerts.make_all(self.credentials / "certs")

    def cli(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"docker {args} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def deploy(self) -> None:
        self.cli("stack", "deploy", "--compose-file", str(STACK_FILE), self.name)

    def logs(self) -> str:
        return "\n".join(
            self.cli("service", "logs", "--no-task-ids", "--tail", "60", service)
            for service in self.cli("stack", "services", "--format", "{{.Name}}", self.name).split()
        )

    def task_containers(self, engine: docker.DockerClient, service: str = "") -> list:
        label = f"com.docker.swarm.service.name={self.name}_{service}" if service else None
        filters = {"label": [f"{NAMESPACE_LABEL}={self.name}", *([label] if label else [])]}
        return engine.containers.list(all=True, filters=filters, ignore_removed=True)


@pytest.fixture
def stack(tmp_path, swarm, otlp_receiver, monkeypatch):
    stack = SwarmStack(tmp_path, int(otlp_receiver.endpoint.rsplit(":", 1)[1]))
    try:
        stack.deploy()
        stack.call_as_operator(monkeypatch)
        yield stack
    finally:
        logs = stack.logs()
        stack.cli("stack", "rm", stack.name)
        gone = wait_until(lambda: not stack.task_containers(swarm), timeout=120, interval=1)
        owned = swarm.containers.list(
            all=True, filters={"label": ["straightline.owner"]}, ignore_removed=True
        )
        ours = [c for c in owned if c.labels["straightline.owner"].endswith("-swarm")]
        labelled = {"label": "straightline.owner"}
        services = [s.name for s in swarm.services.list(filters=labelled)]
        services += [s.name for s in swarm.secrets.list(filters=labelled)]
        for container in ours:
            container.remove(force=True)
        volumes = swarm.volumes.list(filters={"label": f"{NAMESPACE_LABEL}={stack.name}"})
        volumes += swarm.volumes.list(filters={"name": stack.volume})
        for name in {volume.name for volume in volumes}:
            swarm.volumes.get(name).remove(force=True)
        assert gone, f"the stack's tasks outlived `docker stack rm`\n{logs[-3000:]}"
        assert not ours, f"containers left behind: {[c.name for c in ours]}\n{logs[-3000:]}"
        assert not services, f"services or secrets left behind: {services}\n{logs[-3000:]}"


@pytest.mark.timeout(1500)
def test_the_swarm_stack_serves_the_demo_and_replaces_a_killed_task(stack, swarm, channels):
    stack.wait_healthy()
    stack.run_demo()

    placer = placer_pb2_grpc.PlacerServiceStub(
        channels(stack.address("PLACER_2"), tls=stack.operator)
    )
    [task] = [c for c in stack.task_containers(swarm, "adapter-flask") if c.status == "running"]
    task.kill()
    replaced = wait_until(
        lambda: [
            c
            for c in stack.task_containers(swarm, "adapter-flask")
            if c.status == "running" and c.id != task.id
        ],
        timeout=120,
        interval=1,
    )
    assert replaced, f"Swarm did not replace the killed task\n{stack.logs()[-3000:]}"
    # The placers' view loses the killed adapter, then holds its replacement (same instance id),
    # which serves the demo's model.
    assert wait_until(lambda: "flask-swarm" not in instances(placer), timeout=30)
    [back] = [r for r in serving_reports(placer, MODEL_NAME, 3, timeout=180) if r.platform == FLASK]
    assert back.instance_id == "flask-swarm"
    set_policy(placer, pinned_platform=FLASK)
    request = placer_pb2.InferRequest(
        model=types_pb2.ModelRef(name=MODEL_NAME), payload=image_bytes(), content_type="image/jpeg"
    )
    assert placer.Infer(request, timeout=120).served_platform == FLASK


def instances(placer: placer_pb2_grpc.PlacerServiceStub) -> set[str]:
    view = placer.WatchResources(placer_pb2.WatchResourcesRequest(), timeout=5)
    try:
        return {i.report.instance_id for i in next(view).instances}
    finally:
        view.cancel()
