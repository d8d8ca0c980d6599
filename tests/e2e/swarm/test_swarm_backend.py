"""The Docker platform's Swarm backend: a real adapter process whose model servers are the
tasks of a Swarm service on a single-node swarm of this machine's engine. The service scales
from 0 to 2 replicas under a burst and back to 0 when idle; a killed task is replaced by Swarm
and taken back; the adapter's stop removes the service and its secrets."""

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from straightline.v1 import inference_pb2, inference_pb2_grpc
from straightline_common.auth import Role
from straightline_inference.adapter.containers import free_ports
from tests.inference.test_flask_adapter import predict_request
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.tensorflow, pytest.mark.slow]
OWNER_LABEL = "straightline.owner"


def replicas(service) -> int:
    service.reload()
    return service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"]


def running_tasks(service) -> list[dict]:
    return [
        t
        for t in service.tasks(filters={"desired-state": "running"})
        if t["Status"]["State"] == "running"
    ]


@pytest.mark.timeout(900)
def test_the_adapter_scales_its_swarm_service_with_demand(swarm, start_adapter, channels):
    name = f"swarm-test-{uuid.uuid4().hex[:8]}"
    adapter = start_adapter(
        *("docker", "--docker-backend", "swarm", "--name", name),
        *("--image", "straightline/model-server:dev", "--swarm-base-port", str(free_ports(1)[0])),
        *("--max-containers", "2", "--threads-per-container", "1", "--min-warm", "0"),
        *("--idle-timeout-s", "4", "--queue-limit", "8"),
    )
    try:
        service = swarm.services.get(f"{name}-model-server")
        assert replicas(service) == 0
        stub = inference_pb2_grpc.InferenceServiceStub(channels(adapter.address, Role.PLACER))

        def status():
            return stub.GetStatus(inference_pb2.GetStatusRequest(), timeout=10).report

        # A burst of 4 on 2 tasks of 1 slot each: the service scales to 2, every request answered.
        with ThreadPoolExecutor(4) as callers:
            answers = list(
                callers.map(lambda _: stub.Predict(predict_request(), timeout=180), range(4))
            )
        assert all(a.classes for a in answers)
        assert replicas(service) == 2 and len(running_tasks(service)) == 2
        assert (status().warm_environments, status().capacity_total) == (2, 2)
        # Idle for the timeout: back to 0.
        assert wait_until(lambda: replicas(service) == 0, timeout=60, interval=0.5)
        assert wait_until(lambda: not running_tasks(service), timeout=60, interval=0.5)
        assert status().warm_environments == 0

        # A killed task: found by the adapter's probe (or by the request that meets it) and
        # replaced, by Swarm or by a new cold start; the next request is served.
        assert stub.Predict(predict_request(), timeout=180).classes
        [task] = running_tasks(service)
        swarm.containers.get(task["Status"]["ContainerStatus"]["ContainerID"]).kill()
        assert wait_until(lambda: status().warm_environments == 0, timeout=30, interval=0.2)
        assert stub.Predict(predict_request(), timeout=180).classes
        [replacement] = running_tasks(service)
        assert replacement["ID"] != task["ID"] and replicas(service) == 1
    finally:
        assert adapter.terminate(timeout=90) == 0
    owned = {"label": f"{OWNER_LABEL}={name}"}
    assert swarm.services.list(filters=owned) == []
    assert swarm.secrets.list(filters=owned) == []
    assert wait_until(
        lambda: not swarm.containers.list(all=True, filters=owned, ignore_removed=True), timeout=60
    )
