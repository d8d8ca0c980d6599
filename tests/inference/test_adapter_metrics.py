"""The adapter's Prometheus metrics, read from its registry."""

from straightline_common.errors import ResourceExhausted
from straightline_inference.adapter.backend import Answer, Capacity
from straightline_inference.adapter.metrics import AdapterMetrics


class _Backend:
    def capacity(self) -> Capacity:
        return Capacity(total=4, free=1, in_flight=3, queue_depth=2, queue_limit=8)


def test_the_adapter_counts_answers_failures_and_cold_starts_and_reads_capacity_at_scrape():
    metrics = AdapterMetrics("docker")
    metrics.watch_capacity(_Backend())
    warm = Answer({}, [], cold_start_seconds=0.0)
    metrics.observe_answer(warm, 0.2)
    metrics.observe_answer(Answer({}, [], cold_start_seconds=1.5), 1.8)
    metrics.count_failure(ResourceExhausted("full"))
    value = metrics.registry.get_sample_value
    assert (
        value("straightline_adapter_requests_total", {"platform": "docker", "outcome": "ok"}) == 2
    )
    failed = {"platform": "docker", "outcome": "ResourceExhausted"}
    assert value("straightline_adapter_requests_total", failed) == 1
    assert value("straightline_adapter_request_seconds_sum", {"platform": "docker"}) == 2.0
    assert value("straightline_adapter_cold_start_seconds_count", {"platform": "docker"}) == 1
    assert value("straightline_adapter_in_flight", {"platform": "docker"}) == 3
    assert value("straightline_adapter_queue_depth", {"platform": "docker"}) == 2
    assert value("straightline_adapter_free_slots", {"platform": "docker"}) == 1
