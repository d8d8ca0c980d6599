"""The adapter in front of serverless: the Lambda handler under AWS's runtime interface
emulator, as local processes and as containers of the Lambda image."""

import json
import os
import subprocess
from concurrent import futures

import docker
import grpc
import pytest

from straightline.v1 import inference_pb2, inference_pb2_grpc, types_pb2
from straightline_common.modelstore import METADATA_FILE, ModelStore
from straightline_common.processes import dying_with_parent
from straightline_common.s3models import S3Models
from straightline_inference.adapter.containers import free_ports
from straightline_inference.adapter.serverless_backend import (
    emulator_arguments,
    local_function_command,
)
from tests.inference.test_flask_adapter import predict_request
from tests.support.callers import assert_metadata_refuses_escaping_names
from tests.support.models import make_classifier
from tests.support.s3 import BUCKET

pytestmark = pytest.mark.tensorflow


def stub_of(adapter, channels):
    return inference_pb2_grpc.InferenceServiceStub(channels(adapter.address))


@pytest.fixture(scope="module")
def process_lambda(start_adapter):
    return start_adapter(
        "serverless", "--runner", "process", "--concurrency", "1", "--idle-timeout-s", "60"
    )


def test_cold_then_warm_invocations(start_adapter, channels):
    fresh = start_adapter("serverless", "--runner", "process", "--concurrency", "1")
    stub = stub_of(fresh, channels)
    first = stub.Predict(predict_request(), timeout=120)
    second = stub.Predict(predict_request(), timeout=30)
    assert first.platform == second.platform == types_pb2.PLATFORM_SERVERLESS
    assert first.timings.cold_start_paid and not second.timings.cold_start_paid
    assert [c.label for c in first.classes] == [c.label for c in second.classes]


def test_throttled_at_the_concurrency_limit(process_lambda, channels):
    stub = stub_of(process_lambda, channels)
    stub.Predict(predict_request(), timeout=120)  # the one environment is warm
    with futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(stub.Predict, predict_request(), timeout=30) for _ in range(4)]
        errors = [c.exception() for c in calls]
    throttled = [e for e in errors if e is not None]
    assert throttled, "four concurrent requests on a limit of one were all served"
    assert {e.code() for e in throttled} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert "at its limit (1 environments" in throttled[0].details()


def test_batched_requests_share_an_invocation_and_keep_their_own_errors(start_adapter, channels):
    # One environment: unbatched, four requests at once would be three throttled (above).
    batched = start_adapter(
        "serverless",
        *("--runner", "process", "--concurrency", "1"),
        *("--batch-size", "4", "--batch-delay-ms", "300"),
    )
    stub = stub_of(batched, channels)
    alone = stub.Predict(predict_request(), timeout=120)  # the environment is warm now
    report = stub.GetStatus(inference_pb2.GetStatusRequest()).report
    assert report.capacity_total == 4  # one environment, a batch of four
    requests = [predict_request(), predict_request(b"not an image"), *[predict_request()] * 2]
    with futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(stub.Predict, request, timeout=60) for request in requests]
        outcomes = [c.exception() or c.result() for c in calls]
    bad = outcomes.pop(1)
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a JPEG" in bad.details()
    for answer in outcomes:
        assert [c.label for c in answer.classes] == [c.label for c in alone.classes]
        assert [c.score for c in answer.classes] == pytest.approx(
            [c.score for c in alone.classes], abs=1e-5
        )


def test_metadata_of_names_that_leave_the_store_is_refused(process_lambda, channels):
    assert_metadata_refuses_escaping_names(stub_of(process_lambda, channels))


def test_oversize_payload_is_refused_before_any_call(process_lambda, channels):
    stub = stub_of(process_lambda, channels)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(predict_request(b"\xff" * (5 * 1024 * 1024)), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over its 6291456-byte limit" in refused.value.details()


def test_bad_image_is_invalid_argument(process_lambda, channels):
    stub = stub_of(process_lambda, channels)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(predict_request(b"not an image"), timeout=120)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a JPEG image" in refused.value.details()


def test_a_handler_error_is_an_error_not_a_prediction(start_adapter, channels, tmp_path):
    store = ModelStore(tmp_path / "broken")
    version = make_classifier(store, "broken")
    metadata = json.loads((version.directory / METADATA_FILE).read_text())
    metadata["class_names"] = ["only", "two"]  # the model has four outputs
    (version.directory / METADATA_FILE).write_text(json.dumps(metadata))
    adapter = start_adapter("serverless", "--runner", "process", store=store.root)
    with pytest.raises(grpc.RpcError) as failed:
        stub_of(adapter, channels).Predict(
            predict_request(model=types_pb2.ModelRef(name="broken"), top_k=4), timeout=120
        )
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert "the Lambda handler failed: IndexError" in failed.value.details()


@pytest.mark.docker
def test_lambda_image_under_the_emulator_in_containers(start_adapter, channels):
    adapter = start_adapter(
        "serverless",
        "--runner",
        "container",
        "--instance-id",
        "lambda-test-1",
        "--concurrency",
        "2",
    )
    stub = stub_of(adapter, channels)
    answer = stub.Predict(predict_request(), timeout=120)
    assert answer.timings.cold_start_paid
    engine = docker.from_env()
    try:
        owned = engine.containers.list(
            filters={"label": "straightline.owner=lambda-test-1"}, ignore_removed=True
        )
        assert [c.labels["straightline.role"] for c in owned] == ["lambda"]
        assert adapter.terminate(timeout=60) == 0
        assert (
            engine.containers.list(
                all=True, filters={"label": "straightline.owner=lambda-test-1"}, ignore_removed=True
            )
            == []
        )
    finally:
        engine.close()


def test_trace_context_travels_into_the_invocation(process_lambda, channels, otlp_receiver):
    from opentelemetry import trace

    from straightline_common.telemetry import metadata_with_context

    stub = stub_of(process_lambda, channels)
    with trace.get_tracer("test").start_as_current_span("client") as client:
        stub.Predict(predict_request(), timeout=120, metadata=metadata_with_context())
    trace_id = format(client.get_span_context().trace_id, "032x")
    names = {"straightline.v1.InferenceService/Predict", "lambda.invoke", "model.infer"}
    spans = otlp_receiver.wait_for(lambda s: s.trace_id == trace_id and s.name in names, count=3)
    by_name = {s.name: s for s in spans}
    adapter = by_name["straightline.v1.InferenceService/Predict"]
    invocation = by_name["lambda.invoke"]
    assert invocation.service == "straightline-lambda"
    assert invocation.parent_span_id == adapter.span_id
    assert by_name["model.infer"].parent_span_id == invocation.span_id


@pytest.mark.parametrize("models_from", ["store", "s3"])
def test_an_aws_function_through_its_invoke_api(
    start_adapter, channels, model_store, models_from, s3_endpoint, tmp_path
):
    """The AWS mode (function name, endpoint override, standard credentials) against the
    emulator, which speaks Lambda's Invoke API: AWS itself cannot be reached from here. The
    function finds the model in its store, or, with an empty store, fetches it from S3."""
    function_env = {"STRAIGHTLINE_MODEL_STORE": str(model_store.root)}
    if models_from == "s3":
        s3_url = f"s3://{BUCKET}/lambda"
        publisher = ModelStore(model_store.root, S3Models(s3_url, client=s3_endpoint.client()))
        publisher.publish(model_store.resolve("tiny"))
        function_env = {
            **s3_endpoint.env(),
            "STRAIGHTLINE_MODEL_STORE": str(tmp_path / "models"),
            "STRAIGHTLINE_MODEL_S3_URL": s3_url,
        }
    port, runtime_port = free_ports(2)
    emulator = subprocess.Popen(
        dying_with_parent(local_function_command(emulator_arguments(port, runtime_port))),
        env={**os.environ, **function_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        adapter = start_adapter(
            "serverless",
            "--function-name",
            "function",
            "--endpoint-url",
            f"http://127.0.0.1:{port}",
            "--concurrency",
            "3",
            env={
                "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        )
        stub = stub_of(adapter, channels)
        answer = stub.Predict(predict_request(), timeout=120)
        assert answer.platform == types_pb2.PLATFORM_SERVERLESS and answer.classes
        report = stub.GetStatus(inference_pb2.GetStatusRequest()).report
        assert (report.capacity_total, report.capacity_free) == (3, 3)
        fetched = tmp_path / "models" / "tiny" / "1" / "model.h5"
        assert fetched.is_file() == (models_from == "s3")
    finally:
        emulator.terminate()
        emulator.wait(10)
