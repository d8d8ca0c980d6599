"""Prometheus metrics of the devrunner, read from its job records at each scrape (so they
survive a restart as the records do): jobs by kind and state, and how long finished jobs ran
(from start to end) by kind and final state."""

import bisect
from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from straightline.v1 import devrunner_pb2
from straightline_devrunner.jobs import FINISHED, JobStore

_DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


def devrunner_metrics(jobs: JobStore) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(_JobsCollector(jobs))
    return registry


class _JobsCollector(Collector):
    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        jobs = self._jobs.all()
        by_state = GaugeMetricFamily(
            "straightline_devrunner_jobs", "Jobs by kind and state.", labels=["kind", "state"]
        )
        for (kind, state), count in sorted(Counter((_kind(j), _state(j)) for j in jobs).items()):
            by_state.add_metric([kind, state], count)
        yield by_state
        yield _durations(j for j in jobs if j.state in FINISHED and j.HasField("start_time"))


def _durations(finished: Iterable[devrunner_pb2.Job]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "straightline_devrunner_job_duration_seconds",
        "How long finished jobs ran, from start to end, by kind and final state.",
        labels=["kind", "state"],
    )
    groups: dict[tuple[str, str], list[float]] = {}
    for job in finished:
        seconds = (job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()) / 1e9
        groups.setdefault((_kind(job), _state(job)), []).append(max(0.0, seconds))
    for labels, durations in sorted(groups.items()):
        durations.sort()
        buckets = [
            (floatToGoString(bound), bisect.bisect_right(durations, bound))
            for bound in _DURATION_BUCKETS
        ]
        buckets.append(("+Inf", len(durations)))
        family.add_metric(list(labels), buckets, sum(durations))
    return family


def _kind(job: devrunner_pb2.Job) -> str:
    return devrunner_pb2.JobKind.Name(job.kind).removeprefix("JOB_KIND_").lower()


def _state(job: devrunner_pb2.Job) -> str:
    return devrunner_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
