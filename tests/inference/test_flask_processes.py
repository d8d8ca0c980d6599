"""The Flask platform as several model server processes (`--model-server-processes`): a real
adapter, its real model servers, which process answered read from the model servers' spans."""

import os
import signal

import pytest
from opentelemetry import trace

from straightline.v1 import inference_pb2_grpc
from straightline_common.telemetry import metadata_with_context
from tests.inference.test_flask_adapter import predict_request
from tests.inference.test_flask_faults import status
from tests.support.procfs import children, state_of
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.tensorflow, pytest.mark.faults]

MODEL_SERVER_SPAN = "POST /v1/models/<name>/predict"


@pytest.fixture
def flask(start_adapter):
    return start_adapter("flask", "--threads", "2", "--model-server-processes", "2")


@pytest.fixture
def stub(flask, channels):
    return inference_pb2_grpc.InferenceServiceStub(channels(flask.address))


def answering_process(stub, otlp_receiver) -> int:
    """The pid of the model server process that answered one request."""
    with trace.get_tracer("test").start_as_current_span("client") as client:
        assert stub.Predict(predict_request(), timeout=30, metadata=metadata_with_context()).classes
    trace_id = format(client.get_span_context().trace_id, "032x")
    [span] = otlp_receiver.wait_for(
        lambda s: s.trace_id == trace_id and s.name == MODEL_SERVER_SPAN
    )
    return span.pid


def test_requests_one_at_a_time_take_turns_between_the_processes(flask, stub, otlp_receiver):
    processes = children(flask.process.pid)
    assert len(processes) == 2
    answered = [answering_process(stub, otlp_receiver) for _ in range(4)]
    assert set(answered) == processes
    assert answered[0] != answered[1]  # in turn, not by chance
    report = status(stub)
    assert (report.capacity_total, report.capacity_free) == (2, 2)
    assert report.runs_per_environment == 2  # each process runs one batch at a time


def test_a_killed_process_takes_its_slot_away_while_the_other_serves(flask, stub, otlp_receiver):
    killed, other = sorted(children(flask.process.pid))
    os.kill(killed, signal.SIGKILL)
    assert wait_until(lambda: status(stub).capacity_free == 1, timeout=5)
    assert not status(stub).unavailable_reason  # the platform still serves
    assert {answering_process(stub, otlp_receiver) for _ in range(3)} == {other}
    assert wait_until(
        lambda: (
            len(children(flask.process.pid) - {killed}) == 2 and status(stub).capacity_free == 2
        ),
        timeout=60,
    ), "the adapter did not bring the killed process back"
    assert state_of(killed) == ""  # reaped
