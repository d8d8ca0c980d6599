"""The adapter's core: checks a request, runs it on the platform, keeps recent statistics."""

import threading
import time
from collections import deque
from dataclasses import dataclass

from straightline_common.errors import InvalidArgument, ServiceError
from straightline_inference.adapter.platform import Answer, Platform, PredictCall

_RECENT = 256


@dataclass(frozen=True)
class Served:
    answer: Answer
    total_seconds: float


@dataclass(frozen=True)
class Recent:
    latency_p50_s: float
    latency_p95_s: float
    failures: int


class Adapter:
    def __init__(self, platform: Platform, instance_id: str):
        self.platform = platform
        self.instance_id = instance_id
        self._latencies: deque[float] = deque(maxlen=_RECENT)
        self._failures = 0
        self._lock = threading.Lock()

    def predict(self, call: PredictCall, timeout: float) -> Served:
        if not call.model_name:
            raise InvalidArgument("model.name is empty; name the model to run")
        if not call.payload:
            raise InvalidArgument("the payload is empty; send the image's bytes")
        started = time.perf_counter()
        try:
            answer = self.platform.predict(call, timeout)
        except ServiceError:
            with self._lock:
                self._failures += 1
            raise
        total = time.perf_counter() - started
        with self._lock:
            self._latencies.append(total)
        return Served(answer, total)

    def recent(self) -> Recent:
        """Latency percentiles of recent requests, and failures since the last call."""
        with self._lock:
            ordered = sorted(self._latencies)
            failures, self._failures = self._failures, 0
        if not ordered:
            return Recent(0.0, 0.0, failures)
        return Recent(
            ordered[len(ordered) // 2],
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            failures,
        )
