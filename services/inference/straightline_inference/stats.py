"""What an adapter instance measures of its recent requests and reports in its heartbeats:
latency percentiles, failures, cold starts, and service time by request size (the SLO-aware
rule's predictions read them).

"Recent" is the last requests up to a count, none older than `MAX_AGE_S` (cold starts: the
last ones): a platform the placer stops choosing reports nothing after that, instead of the
figures it had when it was last busy, so the placer measures it again rather than keep
avoiding it on stale figures."""

import bisect
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

from straightline.v1 import types_pb2
from straightline_common.timeconv import duration

# Upper bounds of the size buckets, bytes: the animals4 JPEGs fall in the first two, the
# demo's large PNGs in the last ones. The last bucket has no bound.
SIZE_BUCKETS = (16 * 1024, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024)
_RECENT = 256
_RECENT_PER_BUCKET = 64
_RECENT_COLD_STARTS = 16
MAX_AGE_S = 30.0


class RecentStats:
    """Thread-safe; `fill` writes a report's statistics fields and resets the failure count."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_age_s: float = MAX_AGE_S
    ) -> None:
        # (when, seconds) pairs, oldest first.
        self._latencies: deque[tuple[float, float]] = deque(maxlen=_RECENT)
        self._by_size: list[deque[tuple[float, float]]] = [
            deque(maxlen=_RECENT_PER_BUCKET) for _ in range(len(SIZE_BUCKETS) + 1)
        ]
        # Cold starts do not expire: they are rare, and a platform's do not change with load.
        self._cold_starts: deque[float] = deque(maxlen=_RECENT_COLD_STARTS)
        self._clock = clock
        self._max_age_s = max_age_s
        self._failures = 0
        self._lock = threading.Lock()

    def record(self, size: int, total_s: float, queued_s: float, cold_start_s: float) -> None:
        """One answered request: its size, whole time, and the parts spent waiting for a slot
        and starting an environment; the rest is its service time."""
        bucket = self._by_size[bisect.bisect_left(SIZE_BUCKETS, size)]
        now = self._clock()
        with self._lock:
            self._latencies.append((now, total_s))
            bucket.append((now, max(0.0, total_s - queued_s - cold_start_s)))
            if cold_start_s > 0:
                self._cold_starts.append(cold_start_s)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1

    def fill(self, report: types_pb2.InstanceReport) -> None:
        since = self._clock() - self._max_age_s
        with self._lock:
            latencies = sorted(_since(self._latencies, since))
            by_size = [_since(bucket, since) for bucket in self._by_size]
            cold_starts = list(self._cold_starts)
            report.recent_failures, self._failures = self._failures, 0
        if latencies:
            report.recent_latency_p50.CopyFrom(duration(latencies[len(latencies) // 2]))
            report.recent_latency_p95.CopyFrom(duration(_p95(latencies)))
        if cold_starts:
            report.recent_cold_start.CopyFrom(duration(statistics.median(cold_starts)))
        bounds = (*SIZE_BUCKETS, 0)
        report.service_times.extend(
            _service_times(bound, sorted(times))
            for bound, times in zip(bounds, by_size, strict=True)
            if times
        )


def _since(samples: deque[tuple[float, float]], since: float) -> list[float]:
    """The samples' values from `since` on, dropping the older ones from the deque."""
    while samples and samples[0][0] < since:
        samples.popleft()
    return [value for _, value in samples]


def _service_times(bound: int, ordered: list[float]) -> types_pb2.ServiceTimeBySize:
    return types_pb2.ServiceTimeBySize(
        max_bytes=bound,
        median=duration(statistics.median(ordered)),
        p95=duration(_p95(ordered)),
        slowest=duration(ordered[-1]),
        count=len(ordered),
    )


def _p95(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
