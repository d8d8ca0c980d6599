"""The Flask adapter keeps its model server alive (issue 16): a real adapter process, its real
model server child killed or stopped, the adapter's own reports and answers watched."""

import os
import signal
import time

import pytest

from straightline.v1 import inference_pb2, inference_pb2_grpc
from tests.inference.test_flask_adapter import predict_request
from tests.support.procfs import children, state_of
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.tensorflow, pytest.mark.faults]


@pytest.fixture
def flask(start_adapter):
    return start_adapter("flask", "--threads", "2")


@pytest.fixture
def stub(flask, channels):
    return inference_pb2_grpc.InferenceServiceStub(channels(flask.address))


def status(stub):
    return stub.GetStatus(inference_pb2.GetStatusRequest(), timeout=5).report


def model_server_of(flask) -> int:
    [child] = children(flask.process.pid)
    return child


def wait_restarted(stub, flask, old: int, timeout: float) -> float:
    """Seconds until a new model server serves again."""
    started = time.monotonic()
    assert wait_until(
        lambda: children(flask.process.pid) - {old} and not status(stub).unavailable_reason,
        timeout=timeout,
    ), "the adapter did not bring its model server back"
    return time.monotonic() - started


def test_a_killed_model_server_is_reported_reaped_and_restarted(flask, stub):
    old = model_server_of(flask)
    os.kill(old, signal.SIGKILL)
    started = time.monotonic()
    assert wait_until(lambda: status(stub).unavailable_reason, timeout=5)
    print(f"killed model server reported down after {time.monotonic() - started:.2f} s")
    down = status(stub)
    assert "Flask model server cannot serve: its process exited (-9)" in down.unavailable_reason
    assert (down.capacity_free, down.queue_limit) == (0, 0)
    restarted = wait_restarted(stub, flask, old, timeout=60)
    print(f"killed model server serving again after {restarted:.2f} s more")
    assert state_of(old) == ""  # reaped, not a zombie
    assert stub.Predict(predict_request(), timeout=30).classes
    assert status(stub).capacity_free == 2


def test_a_stopped_model_server_is_found_hung_and_replaced(flask, stub):
    old = model_server_of(flask)
    os.kill(old, signal.SIGSTOP)
    try:
        # Reported down at the second missed probe of its health listener (0.5 s each, twice a
        # second), restarted at the fourth (the stopped one is killed).
        started = time.monotonic()
        assert wait_until(lambda: status(stub).unavailable_reason, timeout=15)
        print(f"hung model server reported down after {time.monotonic() - started:.2f} s")
        assert "did not answer" in status(stub).unavailable_reason
        wait_restarted(stub, flask, old, timeout=60)
        assert state_of(old) == ""
        assert stub.Predict(predict_request(), timeout=30).classes
    finally:
        if state_of(old):
            os.kill(old, signal.SIGKILL)
