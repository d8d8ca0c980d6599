"""The adapter's core in-process, with a fake backend in place of a platform: what it checks
before a request reaches the backend, what it measures of the answers, and what it reports."""

import pytest

from straightline.v1 import types_pb2
from straightline_common.errors import InvalidArgument, ResourceExhausted
from straightline_inference.adapter.backend import Answer, Capacity, PredictCall
from straightline_inference.adapter.core import Adapter
from straightline_inference.adapter.metrics import AdapterMetrics


class FakeBackend:
    """Answers with the queue and cold start it is given, or raises `refusal`."""

    kind = types_pb2.PLATFORM_DOCKER

    def __init__(self):
        self.calls: list[PredictCall] = []
        self.refusal: Exception | None = None
        self.queue_s = self.cold_start_s = 0.0

    def capacity(self) -> Capacity:
        return Capacity(total=2, free=1, in_flight=1, queue_depth=0, queue_limit=4)

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        self.calls.append(call)
        if self.refusal is not None:
            raise self.refusal
        return Answer(
            {"name": call.model_name, "version": "1"},
            [],
            queue_seconds=self.queue_s,
            cold_start_seconds=self.cold_start_s,
        )


def call(model="tiny", version="", payload=b"jpeg", content_type="image/jpeg") -> PredictCall:
    return PredictCall("r1", model, version, payload, content_type, 1)


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def adapter(backend):
    return Adapter(backend, "docker-1", AdapterMetrics("docker"))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (call(model=""), "model.name is empty"),
        (call(model="../etc"), "model"),
        (call(payload=b""), "payload is empty"),
    ],
)
def test_bad_requests_never_reach_the_backend(adapter, backend, bad, message):
    with pytest.raises(InvalidArgument, match=message):
        adapter.predict(bad, timeout=1.0)
    assert backend.calls == []


def test_answers_are_measured_without_their_queue_and_cold_start(adapter, backend):
    backend.queue_s, backend.cold_start_s = 5.0, 3.0  # as the backend reports them
    served = adapter.predict(call(), timeout=1.0)
    assert served.answer.model == {"name": "tiny", "version": "1"}
    report = types_pb2.InstanceReport()
    adapter.fill_report(report)
    (bucket,) = report.service_times
    assert bucket.count == 1 and bucket.median.ToNanoseconds() == 0  # total - 5 - 3 < 0: 0
    assert report.recent_cold_start.ToNanoseconds() == 3 * 10**9
    assert (report.capacity_total, report.capacity_free, report.queue_limit) == (2, 1, 4)


def test_refusals_are_counted_once_in_the_next_report_and_in_the_metrics(adapter, backend):
    backend.refusal = ResourceExhausted("full")
    for _ in range(2):
        with pytest.raises(ResourceExhausted):
            adapter.predict(call(), timeout=1.0)
    first, second = types_pb2.InstanceReport(), types_pb2.InstanceReport()
    adapter.fill_report(first)
    adapter.fill_report(second)
    assert (first.recent_failures, second.recent_failures) == (2, 0)
    refused = {"platform": "docker", "outcome": "ResourceExhausted"}
    value = adapter.metrics.registry.get_sample_value
    assert value("straightline_adapter_requests_total", refused) == 2
