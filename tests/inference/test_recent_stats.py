import pytest

from straightline.v1 import types_pb2
from straightline_inference.stats import RecentStats


def filled(stats: RecentStats) -> types_pb2.InstanceReport:
    report = types_pb2.InstanceReport()
    stats.fill(report)
    return report


def test_service_time_per_size_bucket_excludes_queueing_and_cold_start():
    stats = RecentStats()
    for i in range(40):  # small requests: 0.10 .. 0.49 s of service, after 1 s in a queue
        stats.record(1_000, total_s=1.10 + i / 100, queued_s=1.0, cold_start_s=0.0)
    stats.record(2_000_000, total_s=3.0, queued_s=0.0, cold_start_s=2.0)
    small, large = filled(stats).service_times
    assert (small.max_bytes, small.count, large.max_bytes, large.count) == (16_384, 40, 4 << 20, 1)
    assert small.median.ToNanoseconds() / 1e9 == pytest.approx(0.295)
    assert small.p95.ToNanoseconds() / 1e9 == pytest.approx(0.48)  # the 39th of 40
    assert small.slowest.ToNanoseconds() / 1e9 == pytest.approx(0.49)
    assert large.median.ToNanoseconds() == large.slowest.ToNanoseconds() == 10**9


def test_failures_are_counted_once_per_report():
    stats = RecentStats()
    stats.record_failure()
    stats.record_failure()
    assert filled(stats).recent_failures == 2
    assert filled(stats).recent_failures == 0


def test_requests_older_than_the_maximum_age_are_forgotten_but_cold_starts_are_not():
    now = [0.0]
    stats = RecentStats(clock=lambda: now[0], max_age_s=30.0)
    stats.record(1_000, total_s=3.0, queued_s=0.0, cold_start_s=2.5)
    now[0] = 20.0
    stats.record(1_000, total_s=0.2, queued_s=0.0, cold_start_s=0.0)
    assert filled(stats).service_times[0].count == 2
    now[0] = 40.0
    report = filled(stats)
    assert [b.count for b in report.service_times] == [1]
    assert report.recent_latency_p50.ToNanoseconds() == 200_000_000
    assert report.recent_cold_start.ToNanoseconds() == 2_500_000_000
    now[0] = 51.0
    report = filled(stats)
    assert (len(report.service_times), report.HasField("recent_latency_p50")) == (0, False)
    assert report.recent_cold_start.ToNanoseconds() == 2_500_000_000
