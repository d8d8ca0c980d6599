"""Prometheus metrics of the placer, served on their own HTTP port (/metrics)."""

import time
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from straightline_placer.algorithm import Branch, Platform, platform_label
from straightline_placer.registry import Instance


class PlacerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.placements = Counter(
            "straightline_placements",
            "Requests placed, by platform and Algorithm 1 branch.",
            ["platform", "branch"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "straightline_placement_decision_seconds",
            "Time to decide one placement (window, live view, Algorithm 1).",
            buckets=(1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3),
            registry=self.registry,
        )
        self.mirrors = Counter(
            "straightline_mirrors",
            "Copies of requests sent to a platform to measure it (their answers dropped).",
            ["platform"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "straightline_fallbacks",
            "Requests sent to another platform after the chosen one refused them.",
            ["from_platform", "to_platform"],
            registry=self.registry,
        )
        self.prediction_error = Histogram(
            "straightline_prediction_error_seconds",
            "Under rules that predict: observed minus predicted latency of the attempt on the "
            "platform placed (negative: faster than predicted).",
            ["platform"],
            buckets=(-1, -0.3, -0.1, -0.03, -0.01, 0, 0.01, 0.03, 0.1, 0.3, 1, 3),
            registry=self.registry,
        )
        self.live_instances = Gauge(
            "straightline_live_instances",
            "Adapter instances in the live view, by platform.",
            ["platform"],
            registry=self.registry,
        )
        # Labelled children looked up once: the per-request path only increments.
        self._placement_counters = {
            (platform, branch): self.placements.labels(
                platform_label(platform), branch.name.lower()
            )
            for platform in (*Platform, None)
            for branch in Branch
        }

    def observe_placement(self, platform: Platform | None, branch: Branch, started: float) -> None:
        self._placement_counters[platform, branch].inc()
        self.decision_seconds.observe(time.perf_counter() - started)

    def count_fallback(self, chosen: Platform, used: Platform) -> None:
        self.fallbacks.labels(chosen.name.lower(), used.name.lower()).inc()

    def count_mirror(self, platform: Platform) -> None:
        self.mirrors.labels(platform_label(platform)).inc()

    def observe_prediction_error(self, platform: Platform, error_s: float) -> None:
        self.prediction_error.labels(platform_label(platform)).observe(error_s)

    def set_live_instances(self, instances: Iterable[Instance]) -> None:
        counts = Tally(instance.platform for instance in instances)
        for platform in Platform:
            self.live_instances.labels(platform.name.lower()).set(counts[platform])
