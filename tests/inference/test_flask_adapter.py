"""The adapter in front of Flask: a real model server child process, over real gRPC."""

import re
import urllib.request
from concurrent import futures

import grpc
import pytest

from straightline.v1 import inference_pb2, inference_pb2_grpc, types_pb2
from tests.support.callers import assert_metadata_refuses_escaping_names
from tests.support.models import CLASSES, image_bytes

pytestmark = pytest.mark.tensorflow
TINY = types_pb2.ModelRef(name="tiny")


def predict_request(payload=None, content_type="image/jpeg", model=TINY, top_k=2):
    return inference_pb2.PredictRequest(
        request_id="r1",
        model=model,
        content_type=content_type,
        top_k=top_k,
        payload=image_bytes() if payload is None else payload,
    )


@pytest.fixture(scope="module")
def flask_adapter(start_adapter):
    return start_adapter("flask", "--threads", "2")


@pytest.fixture
def stub(flask_adapter, channels):
    return inference_pb2_grpc.InferenceServiceStub(channels(flask_adapter.address))


def test_predict_reports_the_answer_and_its_timings(stub):
    answer = stub.Predict(predict_request(), timeout=30)
    assert answer.platform == types_pb2.PLATFORM_FLASK
    assert answer.model.name == "tiny" and answer.model.version == "1"
    assert len(answer.classes) == 2 and answer.classes[0].label in CLASSES
    assert answer.timings.execution.ToNanoseconds() > 0
    assert answer.timings.total.ToNanoseconds() >= answer.timings.execution.ToNanoseconds()
    assert not answer.timings.cold_start_paid


def test_metrics_count_the_answers_and_show_the_capacity(stub, flask_adapter):
    stub.Predict(predict_request(), timeout=30)
    url = f"http://127.0.0.1:{flask_adapter.ports['metrics']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    answered = re.search(
        r'^straightline_adapter_requests_total\{outcome="ok",platform="flask"\} (\S+)$', text, re.M
    )
    assert answered and float(answered.group(1)) >= 1
    assert 'straightline_adapter_capacity_slots{platform="flask"} 2.0' in text


def queue_limit(adapter) -> float:
    url = f"http://127.0.0.1:{adapter.ports['metrics']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    found = re.search(r'^straightline_adapter_queue_limit\{platform="flask"\} (\S+)$', text, re.M)
    assert found, "the adapter exports no queue limit"
    return float(found.group(1))


def test_a_burst_queues_in_the_queue_its_slots_drain_within_the_objective(stub, flask_adapter):
    # By default the queue holds what the 2 slots answer within 300 ms at their measured pace
    # (a few ms a request here: dozens of places), not a fixed 8: a burst of 24 that a queue
    # of 8 would refuse in part is answered in full.
    for _ in range(16):
        stub.Predict(predict_request(), timeout=30)
    assert queue_limit(flask_adapter) > 22
    with futures.ThreadPoolExecutor(24) as callers:
        burst = [callers.submit(stub.Predict, predict_request(), timeout=30) for _ in range(24)]
        answers = [b.result() for b in burst]
    assert all(answer.classes for answer in answers)


def test_metadata_and_status(stub):
    metadata = stub.GetModelMetadata(inference_pb2.GetModelMetadataRequest(model=TINY)).metadata
    assert list(metadata.class_names) == list(CLASSES)
    assert (metadata.input_width, metadata.input_height) == (32, 32)
    assert len(metadata.checksum) == 64
    report = stub.GetStatus(inference_pb2.GetStatusRequest()).report
    assert (report.capacity_total, report.capacity_free) == (2, 2)
    assert report.runs_per_environment == 1  # its model server batches: a batch at a time
    assert [(m.name, m.version) for m in report.models] == [("tiny", "1")]


def test_metadata_of_names_that_leave_the_store_is_refused(stub):
    assert_metadata_refuses_escaping_names(stub)


@pytest.mark.parametrize(
    ("request_message", "code", "message"),
    [
        (predict_request(b"not an image"), grpc.StatusCode.INVALID_ARGUMENT, "not a JPEG image"),
        (predict_request(image_bytes()[:200]), grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
        (
            predict_request(content_type="application/pdf"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "content type 'application/pdf' is not supported",
        ),
        (
            predict_request(b"x" * (16 * 1024 * 1024 + 1), "image/png"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "over the limit",
        ),
        (predict_request(b""), grpc.StatusCode.INVALID_ARGUMENT, "the payload is empty"),
        (
            predict_request(model=types_pb2.ModelRef(name="nope")),
            grpc.StatusCode.NOT_FOUND,
            "model nope is not served here",
        ),
        (
            predict_request(model=types_pb2.ModelRef(name="")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "model.name is empty",
        ),
    ],
)
def test_bad_input_maps_to_status_codes(stub, request_message, code, message):
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(request_message, timeout=30)
    assert refused.value.code() == code
    assert message in refused.value.details()
    assert stub.Predict(predict_request(), timeout=30).classes  # still serving


def test_trace_continues_into_the_model_server(stub, otlp_receiver, spans):
    from opentelemetry import trace

    from straightline_common.telemetry import metadata_with_context

    with trace.get_tracer("test").start_as_current_span("client") as client:
        stub.Predict(predict_request(), timeout=30, metadata=metadata_with_context())
    trace_id = format(client.get_span_context().trace_id, "032x")
    names = {
        "straightline.v1.InferenceService/Predict",
        "POST /v1/models/<name>/predict",
        "model.decode",
        "model.infer",
    }
    received = otlp_receiver.wait_for(lambda s: s.trace_id == trace_id and s.name in names, count=4)
    by_name = {s.name: s for s in received}
    adapter = by_name["straightline.v1.InferenceService/Predict"]
    server = by_name["POST /v1/models/<name>/predict"]
    assert adapter.service == "straightline-adapter-flask"
    assert server.service == "straightline-modelserver"
    assert adapter.parent_span_id == format(client.get_span_context().span_id, "016x")
    assert server.parent_span_id == adapter.span_id
    assert by_name["model.decode"].parent_span_id == server.span_id
    assert by_name["model.infer"].parent_span_id == server.span_id
