"""The adapter in front of Docker: model-server containers started on demand."""

import time
from concurrent import futures

import docker
import grpc
import pytest

from straightline.v1 import inference_pb2, inference_pb2_grpc, types_pb2
from tests.inference.test_flask_adapter import predict_request
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.tensorflow]
OWNER_LABEL = "straightline.owner"


@pytest.fixture(scope="module")
def engine():
    client = docker.from_env()
    yield client
    client.close()


def owned_containers(engine, instance_id):
    return engine.containers.list(
        all=True, filters={"label": f"{OWNER_LABEL}={instance_id}"}, ignore_removed=True
    )


def test_cold_start_warm_reuse_idle_removal_and_clean_stop(start_adapter, channels, engine):
    adapter = start_adapter(
        "docker",
        "--instance-id",
        "docker-test-1",
        "--max-containers",
        "1",
        "--threads-per-container",
        "1",
        "--queue-limit",
        "1",
        "--idle-timeout-s",
        "3",
        env={"TF_NUM_INTRAOP_THREADS": "1", "UNRELATED_SETTING": "x"},
    )
    stub = inference_pb2_grpc.InferenceServiceStub(channels(adapter.address))
    report = stub.GetStatus(inference_pb2.GetStatusRequest()).report
    assert (report.capacity_total, report.capacity_free) == (1, 1)  # room to start one
    assert owned_containers(engine, "docker-test-1") == []

    cold = stub.Predict(predict_request(), timeout=120)
    assert cold.platform == types_pb2.PLATFORM_DOCKER
    assert cold.timings.cold_start_paid and cold.timings.cold_start.ToMilliseconds() > 500
    [container] = owned_containers(engine, "docker-test-1")
    assert container.labels["straightline.role"] == "model-server"
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    environment = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert environment["TF_NUM_INTRAOP_THREADS"] == "1"  # inherited from the adapter
    assert environment["OTEL_SERVICE_NAME"] == "straightline-modelserver"
    assert "UNRELATED_SETTING" not in environment

    warm = stub.Predict(predict_request(), timeout=30)
    assert not warm.timings.cold_start_paid
    assert [c.id for c in owned_containers(engine, "docker-test-1")] == [container.id]
    assert [c.label for c in warm.classes] == [c.label for c in cold.classes]

    # One slot, one queue place: a third concurrent request is refused.
    with futures.ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(stub.Predict, predict_request(), timeout=30) for _ in range(3)]
        outcomes = [c.exception() for c in calls]
    refused = [o for o in outcomes if o is not None]
    assert len(refused) <= 1
    assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused)

    deadline = time.monotonic() + 15
    while owned_containers(engine, "docker-test-1") and time.monotonic() < deadline:
        time.sleep(0.25)
    assert owned_containers(engine, "docker-test-1") == [], "idle container was not removed"

    stub.Predict(predict_request(), timeout=120)  # starts one again
    assert len(owned_containers(engine, "docker-test-1")) == 1
    assert adapter.terminate(timeout=60) == 0
    assert owned_containers(engine, "docker-test-1") == []


def test_missing_image_fails_at_start_with_a_clear_message(tmp_path, model_store):
    from straightline_common.processes import ServiceProcess

    process = ServiceProcess(
        "straightline_inference.adapter",
        [
            "--platform",
            "docker",
            "--listen",
            "127.0.0.1:0",
            "--placer",
            "off",
            "--store",
            str(model_store.root),
            "--image",
            "straightline/absent:none",
        ],
        tmp_path,
    )
    assert process.process.wait(60) == 1
    assert "image straightline/absent:none is not on this engine" in process.log()
    process.terminate()


@pytest.mark.faults
def test_a_restarted_adapter_removes_what_its_killed_predecessor_left(start_adapter, engine):
    options = ("--name", "docker-stable", "--max-containers", "1", "--min-warm", "1")
    try:
        killed = start_adapter("docker", "--instance-id", "docker-before", *options)
        [left] = owned_containers(engine, "docker-stable")
        killed.process.kill()  # SIGKILL: it cannot remove its container
        killed.process.wait()
        left.reload()
        assert left.status == "running"
        start_adapter("docker", "--instance-id", "docker-after", *options)
        [own] = owned_containers(engine, "docker-stable")  # its own warm one, not the old one
        assert own.id != left.id
        with pytest.raises(docker.errors.NotFound):
            left.reload()
    finally:
        for container in owned_containers(engine, "docker-stable"):
            container.remove(force=True)


@pytest.mark.faults
def test_a_killed_warm_container_is_replaced_without_a_request(start_adapter, engine):
    options = ("--max-containers", "1", "--min-warm", "1")
    start_adapter("docker", "--instance-id", "docker-refill", *options)
    try:
        [first] = owned_containers(engine, "docker-refill")
        first.kill()  # `docker kill`: the adapter is not told

        def replaced() -> bool:
            ids = [c.id for c in owned_containers(engine, "docker-refill")]
            return ids not in ([], [first.id])

        assert wait_until(replaced, timeout=120), "the adapter did not replace its warm container"
        [second] = owned_containers(engine, "docker-refill")
        assert second.status in ("created", "running")
        with pytest.raises(docker.errors.NotFound):
            first.reload()  # removed, not left exited
    finally:
        for container in owned_containers(engine, "docker-refill"):
            container.remove(force=True)
