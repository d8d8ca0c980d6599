"""Requests through the placer to real platforms: Flask, Docker containers and the Lambda
image under the emulator, each answering with the same Keras model."""

import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest

from scripts.localstack import set_policy
from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from tests.support.models import image_bytes, noise_png
from tests.support.stack import placer_process, wait_for_instances

pytestmark = [pytest.mark.docker, pytest.mark.tensorflow]
FLASK, DOCKER, SERVERLESS = (
    types_pb2.PLATFORM_FLASK,
    types_pb2.PLATFORM_DOCKER,
    types_pb2.PLATFORM_SERVERLESS,
)
TINY = types_pb2.ModelRef(name="tiny")
DEFAULTS = placer_pb2.Policy(
    frequency_threshold_rps=10, data_size_threshold_bytes=256 * 1024, fallback_enabled=True
)


@dataclass
class Stack:
    stub: placer_pb2_grpc.PlacerServiceStub
    adapters: dict
    start_flask: Callable[[], object]


HEARTBEAT_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory, start_adapter, otlp_receiver):
    workdir = tmp_path_factory.mktemp("placer")
    # Short enough for the killed-adapter test, long enough that an adapter busy starting a
    # container on a loaded machine does not miss it (1 s did, once, in a full run).
    placer = placer_process(
        workdir, otlp_receiver.endpoint, "--heartbeat-timeout-s", str(HEARTBEAT_TIMEOUT_S)
    )
    try:
        placer.wait_ready()

        def start_flask():
            return start_adapter("flask", "--threads", "1", placer=placer.address)

        adapters = {
            FLASK: start_flask(),
            DOCKER: start_adapter(
                "docker",
                "--max-containers",
                "1",
                "--threads-per-container",
                "1",
                "--queue-limit",
                "8",
                placer=placer.address,
            ),
            SERVERLESS: start_adapter("serverless", "--concurrency", "4", placer=placer.address),
        }
        channel = open_channel(placer.address, Role.OPERATOR)
        stub = placer_pb2_grpc.PlacerServiceStub(channel)
        wait_for_instances(stub, 3)
        yield Stack(stub, adapters, start_flask)
        channel.close()
    finally:
        placer.terminate()


@pytest.fixture
def placer_stub(stack):
    stub = stack.stub
    set_policy(
        stub,
        frequency_threshold_rps=DEFAULTS.frequency_threshold_rps,
        data_size_threshold_bytes=DEFAULTS.data_size_threshold_bytes,
        fallback_enabled=True,
        pinned_platform=types_pb2.PLATFORM_UNSPECIFIED,
    )
    return stub


def infer(stub, payload=None, content_type="image/jpeg", timeout=120):
    return stub.Infer(
        placer_pb2.InferRequest(
            model=TINY, payload=payload or image_bytes(), content_type=content_type, top_k=2
        ),
        timeout=timeout,
    )


def test_the_same_image_gets_the_same_class_on_every_platform(placer_stub):
    image = image_bytes((30, 160, 220))
    answers = {}
    for platform in (FLASK, DOCKER, SERVERLESS):
        set_policy(placer_stub, pinned_platform=platform)
        answer = infer(placer_stub, image)
        assert answer.served_platform == platform
        assert answer.placement.branch == types_pb2.BRANCH_PINNED
        answers[platform] = [(c.label, round(c.score, 4)) for c in answer.classes]
    assert answers[FLASK] == answers[DOCKER] == answers[SERVERLESS]


def test_algorithm_1_end_to_end(placer_stub):
    moderate = infer(placer_stub)
    assert (moderate.served_platform, moderate.placement.branch) == (
        FLASK,
        types_pb2.BRANCH_FLASK_AVAILABLE,
    )
    large = infer(placer_stub, noise_png(400), "image/png")
    assert len(noise_png(400)) > DEFAULTS.data_size_threshold_bytes
    assert (large.served_platform, large.placement.branch) == (
        DOCKER,
        types_pb2.BRANCH_LARGE_DATA,
    )

    # Six at once: Flask's one slot, then Docker's one, then serverless for the rest.
    with futures.ThreadPoolExecutor(6) as pool:
        burst = list(pool.map(lambda _: infer(placer_stub), range(6)))
    branches = [a.placement.branch for a in burst]
    assert types_pb2.BRANCH_FLASK_AVAILABLE in branches
    assert types_pb2.BRANCH_DOCKER_AVAILABLE in branches
    assert types_pb2.BRANCH_NOTHING_AVAILABLE in branches
    assert {a.served_platform for a in burst} == {FLASK, DOCKER, SERVERLESS}

    # Small requests above F go to serverless.
    set_policy(placer_stub, frequency_threshold_rps=0.1)
    hot = infer(placer_stub)
    assert (hot.served_platform, hot.placement.branch) == (
        SERVERLESS,
        types_pb2.BRANCH_HIGH_FREQUENCY_SMALL_DATA,
    )
    assert hot.platform_timings.execution.ToNanoseconds() > 0


def test_bad_input_through_the_placer(placer_stub):
    with pytest.raises(grpc.RpcError) as not_image:
        infer(placer_stub, b"plain text, not pixels")
    assert not_image.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a JPEG image" in not_image.value.details()
    with pytest.raises(grpc.RpcError) as unknown:
        placer_stub.Infer(
            placer_pb2.InferRequest(
                model=types_pb2.ModelRef(name="nope"),
                payload=image_bytes(),
                content_type="image/jpeg",
            ),
            timeout=30,
        )
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_killed_adapter_leaves_the_view_and_its_requests_fall_back(stack, placer_stub):
    for platform in (DOCKER, SERVERLESS):  # no cold start in the timings below
        set_policy(placer_stub, pinned_platform=platform)
        infer(placer_stub)
    set_policy(placer_stub, pinned_platform=types_pb2.PLATFORM_UNSPECIFIED)
    stack.adapters[FLASK].process.kill()
    stack.adapters[FLASK].process.wait()
    killed = time.monotonic()
    try:
        answer = infer(placer_stub)
        if answer.placement.platform == FLASK:  # still in the view: the forward fails over
            assert answer.fell_back and answer.served_platform != FLASK
            assert answer.attempts[0].status_code == grpc.StatusCode.UNAVAILABLE.value[0]
        view = wait_for_instances(placer_stub, 2, timeout=HEARTBEAT_TIMEOUT_S + 5)
        # Within the timeout, plus a heartbeat and a sweep; a rough bound on a loaded machine.
        assert time.monotonic() - killed < 2 * HEARTBEAT_TIMEOUT_S
        assert FLASK not in {v.report.platform for v in view.instances}
        after = infer(placer_stub)
        assert after.placement.platform != FLASK and not after.fell_back
    finally:  # the other tests of the module find Flask again
        stack.adapters[FLASK] = stack.start_flask()
        wait_for_instances(placer_stub, 3)
