"""The adapter's core: checks a request, runs it on the backend, keeps recent statistics."""

import dataclasses
import time
from dataclasses import dataclass

from straightline.v1 import types_pb2
from straightline_common.errors import InvalidArgument, ServiceError
from straightline_common.names import check_model
from straightline_common.timeconv import seconds
from straightline_inference.adapter.backend import Answer, Backend, PredictCall, fill_capacity
from straightline_inference.adapter.metrics import AdapterMetrics
from straightline_inference.batching import BatchCeiling
from straightline_inference.stats import RecentStats


@dataclass(frozen=True)
class Served:
    answer: Answer
    total_seconds: float


class Adapter:
    def __init__(self, backend: Backend, instance_id: str, metrics: AdapterMetrics) -> None:
        self.backend = backend
        self.instance_id = instance_id
        self.stats = RecentStats()
        self.metrics = metrics
        self.batching: BatchCeiling | None = None  # the placer's, for this platform

    def take_batching(self, limits: types_pb2.BatchingLimits) -> None:
        """The placer's batching ceilings for this platform, from a heartbeat's answer; every
        request from now on carries them to the model server."""
        delay = seconds(limits.max_queue_delay) if limits.HasField("max_queue_delay") else None
        self.batching = (
            BatchCeiling(limits.max_batch_size, delay)
            if limits.max_batch_size or delay is not None
            else None
        )

    def predict(self, call: PredictCall, timeout: float) -> Served:
        if not call.model_name:
            raise InvalidArgument("model.name is empty; name the model to run")
        check_model(call.model_name, call.model_version)
        if not call.payload:
            raise InvalidArgument("the payload is empty; send the image's bytes")
        if self.batching is not None:
            call = dataclasses.replace(call, batching=self.batching)
        started = time.perf_counter()
        try:
            answer = self.backend.predict(call, timeout)
        except ServiceError as error:
            self.stats.record_failure()
            self.metrics.count_failure(error)
            raise
        total = time.perf_counter() - started
        self.stats.record(len(call.payload), total, answer.queue_seconds, answer.cold_start_seconds)
        self.metrics.observe_answer(answer, total)
        return Served(answer, total)

    def fill_report(self, report: types_pb2.InstanceReport) -> None:
        """Capacity and recent statistics, as the heartbeat carries them."""
        fill_capacity(report, self.backend.capacity())
        self.stats.fill(report)
