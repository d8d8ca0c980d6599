"""Prometheus metrics of an adapter: its requests (by outcome), their latency and cold starts,
counted as they end; and its backend's capacity, queue and warm environments, read from the
backend at each scrape."""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from straightline_inference.adapter.backend import Answer, Backend

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30)
_CAPACITY = (
    ("capacity_slots", "total", "Slots the backend can run at once."),
    ("free_slots", "free", "Slots free now."),
    ("in_flight", "in_flight", "Requests running now."),
    ("queue_depth", "queue_depth", "Requests waiting for a slot."),
    (
        "queue_limit",
        "queue_limit",
        "Places in the queue (0: requests beyond the slots are refused).",
    ),
    ("warm_environments", "warm_environments", "Environments (processes, containers) running."),
)


class AdapterMetrics:
    def __init__(self, platform: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.platform = platform
        self.requests = Counter(
            "straightline_adapter_requests",
            "Requests the adapter ran, by outcome (ok, or the error's kind).",
            ["platform", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "straightline_adapter_request_seconds",
            "Time from a request's arrival to its answer, queue and cold start included.",
            ["platform"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cold_starts = Histogram(
            "straightline_adapter_cold_start_seconds",
            "Cold starts (a new environment started for a request), and how long they took.",
            ["platform"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._ok = self.requests.labels(platform, "ok")
        self._latency = self.latency.labels(platform)
        self._cold_starts = self.cold_starts.labels(platform)

    def observe_answer(self, answer: Answer, total_s: float) -> None:
        self._ok.inc()
        self._latency.observe(total_s)
        if answer.cold_start_seconds > 0:
            self._cold_starts.observe(answer.cold_start_seconds)

    def count_failure(self, error: Exception) -> None:
        self.requests.labels(self.platform, type(error).__name__).inc()

    def watch_capacity(self, backend: Backend) -> None:
        """Reports the backend's capacity at each scrape."""
        self.registry.register(_CapacityCollector(self.platform, backend))


class _CapacityCollector(Collector):
    def __init__(self, platform: str, backend: Backend) -> None:
        self._platform = platform
        self._backend = backend

    def collect(self) -> Iterator[Metric]:
        capacity = self._backend.capacity()
        for name, field, documentation in _CAPACITY:
            family = GaugeMetricFamily(
                f"straightline_adapter_{name}", documentation, labels=["platform"]
            )
            family.add_metric([self._platform], getattr(capacity, field))
            yield family
