"""The evaluation harness: its schedule and summaries, and a short run of the whole thing on
the small model (real placer and adapters), whose outputs must add up."""

import csv
import json
import os

import pytest

from bench.harness import __main__ as harness
from bench.harness import crosscheck, results, schedule
from bench.harness.generator import Record
from tests.support.models import make_image_folders


def test_constant_and_ramp_phases_send_on_schedule():
    phases = schedule.parse("constant:2:5,ramp:10:1-3")
    arrivals = schedule.arrivals(phases)
    assert len(arrivals) == 10 + 20
    times = [t for t, _ in arrivals]
    assert times == sorted(times)
    assert times[:3] == [0.0, 0.2, 0.4]
    assert {p for _, p in arrivals} == {0, 1}
    ramp = [t - 2 for t, p in arrivals if p == 1]
    first_half = sum(1 for t in ramp if t < 5)
    assert first_half < len(ramp) - first_half  # the rate rises: more in the second half
    assert ramp[-1] < 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no phase"),
        ("steady:3:4", "kind must be"),
        ("ramp:3", "KIND:SECONDS:RATE"),
        ("constant:0:4", "must be positive"),
    ],
)
def test_bad_phases_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        schedule.parse(text)


def test_the_default_scenario_ramps_to_a_multiple_of_the_measured_rate():
    assert schedule.scaled_ramp(311.4, 3.0) == "ramp:180:18.7-934.2"
    assert schedule.scaled_ramp(7.1, 3.0) == "ramp:180:1-21.3"
    assert schedule.scaled_ramp(0.2, 3.0) == "ramp:180:1-2"  # never below the start rate
    with pytest.raises(ValueError, match="must be positive"):
        schedule.scaled_ramp(0.0, 3.0)


def test_summary_counts_add_up_and_failures_leave_the_percentiles():
    records = [
        Record(0, 0, "a", 10, 0.0, 0.0, 0.1, "OK", "flask", "FLASK_AVAILABLE"),
        Record(1, 0, "b", 10, 0.5, 0.5, 0.8, "OK", "serverless", "NOTHING_AVAILABLE", True),
        Record(2, 0, "c", 10, 1.0, 1.0, 51.0, "DEADLINE_EXCEEDED"),
    ]
    summary = results.summary(records, 2.0, [(1.0, 50.0), (2.0, 70.0)])
    assert summary["failures"] == 1 and summary["failure_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert summary["served"] == {"flask": 1, "serverless": 1}
    assert summary["response_ms"]["median"] == pytest.approx(200.0)
    assert summary["fell_back"] == 1 and summary["cpu_percent_mean"] == 60.0
    assert summary["by_platform"]["flask"]["served"] == 1
    assert summary["by_platform"]["flask"]["response_ms"]["median"] == pytest.approx(100.0)
    assert summary["by_platform"]["serverless"]["session_ms"]["p95"] == pytest.approx(300.0)
    bins = results.over_time(records, 1.0)
    assert [b["sessions_so_far"] for b in bins] == [2, 3]
    assert set(bins[0]["response_ms_by_platform"]) == {"flask", "serverless"}
    assert bins[1]["response_ms_by_platform"] == {}
    assert bins[1]["failure_rate"] == 1.0
    assert results.failure_onset(bins) == bins[1]["rate_rps"] == 1.0
    assert results.failure_onset(bins[:1]) is None


def test_sustained_throughput_is_the_best_window_of_answers():
    def answered_at(done_s, status="OK"):
        return Record(0, 0, "a", 10, done_s - 0.1, done_s - 0.1, done_s, status, "flask", "")

    quiet = [answered_at(t) for t in range(0, 60, 10)]  # one answer per 10 s
    busy = [answered_at(60 + i / 5) for i in range(150)]  # then 5 per second for 30 s
    refused = [answered_at(70 + i / 100, "RESOURCE_EXHAUSTED") for i in range(500)]
    records = quiet + busy + refused
    assert results.sustained_throughput(records, window_s=30.0) == pytest.approx(5.0, abs=0.1)
    assert results.sustained_throughput(quiet, window_s=30.0) == pytest.approx(0.13, abs=0.01)
    assert results.summary(records, 90.0, [])["throughput_rps"] == pytest.approx(156 / 90, 0.01)
    assert results.sustained_throughput([]) == 0.0


def test_the_crosscheck_compares_mean_medians_and_the_share_each_tool_adds():
    rounds = [
        {
            "ours": {"median_ms": 70.0, "server_median_ms": 68.0},
            "artillery": {"median_ms": 64.0, "server_median_ms": 63.0},
        },
        {
            "ours": {"median_ms": 66.0, "server_median_ms": 64.0},
            "artillery": {"median_ms": 68.0, "server_median_ms": 67.0},
        },
    ]
    outcome = crosscheck.compare(rounds)
    assert outcome["ours"] == {"median_ms": 68.0, "server_median_ms": 66.0, "added_ms": 2.0}
    assert outcome["artillery"] == {"median_ms": 66.0, "server_median_ms": 65.0, "added_ms": 1.0}
    assert outcome["median_difference"] == pytest.approx(2 / 66, abs=1e-3)
    assert outcome["within_10_percent"]
    rounds[0]["ours"]["median_ms"] = 90.0
    assert not crosscheck.compare(rounds)["within_10_percent"]


def test_records_read_back_from_csv_as_written(tmp_path):
    records = [
        Record(0, 1, "cat/1.jpg", 2048, 0.25, 0.2504, 0.4, "OK", "docker", "DOCKER_AVAILABLE"),
        Record(1, 1, "dog/2.jpg", 10, 0.5, 0.5, 1.5, "UNAVAILABLE", fell_back=True),
    ]
    results.write_csv(records, tmp_path / "run.csv")
    again = results.read_csv(tmp_path / "run.csv")
    assert again[1] == records[1]
    assert again[0].sent_s == 0.25 and again[0].response_ms == pytest.approx(150.0)
    assert (again[0].platform, again[0].fell_back, again[0].bytes) == ("docker", False, 2048)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_a_short_run_writes_records_summaries_and_figures(tmp_path, monkeypatch):
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        monkeypatch.setenv(name, "0")  # TensorFlow's default; restored after the test
    pictures = make_image_folders(tmp_path / "images", per_class=4)
    out = tmp_path / "out"
    policies = ("straightline", "slo-aware", "flask", "serverless")
    code = harness.main(
        [
            *("--models", "small", "--policies", ",".join(policies)),
            *("--testbeds", "local,remote-serverless", "--lambda-concurrency", "8"),
            *("--phases", "constant:3:4", "--images", str(pictures)),
            *("--settle-s", "0", "--capacity-s", "1", "--out", str(out)),
            *("--tf-threads", "1", "--rounds", "2"),
        ]
    )
    assert code == 0
    assert (os.environ["TF_NUM_INTRAOP_THREADS"], os.environ["TF_NUM_INTEROP_THREADS"]) == (
        "1",
        "1",
    )
    assert "AWS_ACCESS_KEY_ID" not in os.environ  # the remote testbed's, put back
    for testbed in ("local", "remote-serverless"):
        outcome = json.loads((out / testbed / "small.json").read_text())
        assert (outcome["testbed"], outcome["phases"], outcome["objective_ms"]) == (
            testbed,
            "constant:3:4",
            100.0,
        )
        assert set(outcome["runs"]) == set(policies)
        [second] = outcome["repeats"]
        assert set(second) == set(policies)
        assert outcome["capacity"]["physical"]["limit_rps"] > 0
        every_round = [(policy, run, "") for policy, run in outcome["runs"].items()]
        every_round += [(policy, run, "-round2") for policy, run in second.items()]
        for policy, run, round_suffix in every_round:
            summary = run["summary"]
            assert summary["requests"] == 12
            assert sum(summary["served"].values()) + summary["failures"] == 12
            assert {p: f["served"] for p, f in summary["by_platform"].items()} == summary["served"]
            assert 0 <= summary["slo_attainment"] <= 1 and summary["cost_per_1000_usd"] >= 0
            with open(out / testbed / f"small-{policy}{round_suffix}.csv") as file:
                rows = list(csv.DictReader(file))
            assert [int(r["index"]) for r in rows] == list(range(12))
            assert sum(r["status"] == "OK" for r in rows) == 12 - summary["failures"]
            assert sum(b["rate_rps"] * 10 for b in run["over_time"]) == pytest.approx(12)
        runs = outcome["runs"]
        assert set(runs["flask"]["summary"]["served"]) <= {"flask"}
        assert set(runs["serverless"]["summary"]["served"]) <= {"serverless"}
        assert runs["slo-aware"]["summary"]["prediction_error"]  # every answer had one
        assert runs["straightline"]["summary"]["prediction_error"] == {}
        for figure in ("policies", "placements", "placements-slo-aware", "slo"):
            assert (out / testbed / f"small-{figure}.png").stat().st_size > 10_000
        assert set(outcome["targets"]) == {"straightline", "slo-aware"}
        assert outcome["targets"]["straightline"]["p95_per_bin"]["bins"] == 1
    remote = "remote-serverless"
    outcome = json.loads((out / remote / "small.json").read_text())
    assert set(outcome["slo_targets"]) == {
        "at_least_best_single",
        "higher_beyond_local",
        "no_failures_until_limit",
        "cost_within_margin",
    }
    assert set(outcome["slo_targets_over_rounds"]) == set(outcome["slo_targets"])
    assert outcome["slo_targets_over_rounds"]["at_least_best_single"]["bins"] == 1
    assert outcome["costing"]["slots"]["serverless"] == 8
    served_remotely = outcome["runs"]["serverless"]["summary"]
    assert served_remotely["served"] == {"serverless": 12}  # the emulator's answers
    tables = (out / "tables.md").read_text()
    assert "### small, testbed local" in tables and "### small, testbed remote-serverless" in tables
    assert "TensorFlow threads per op: 1;" in tables and "latency objective 100.0 ms" in tables
    assert "slo-aware: answered requests by the platform that served them" in tables
    assert "Prediction error (observed response time minus" in tables
    assert "| 1. fails from (rps offered) |" in tables and "Targets of issue 14" in tables
    assert "| policy | round 1 | round 2 |" in tables and "over the 2 rounds" in tables
    written = {t: json.loads((out / t / "small.json").read_text()) for t in ("local", remote)}
    again = ["--models", "small", "--from-records", "--out", str(out)]
    assert harness.main(again) == 0
    for testbed, before in written.items():
        rebuilt = json.loads((out / testbed / "small.json").read_text())
        for policy, run in before["runs"].items():
            assert rebuilt["runs"][policy]["summary"]["served"] == run["summary"]["served"]
            assert rebuilt["runs"][policy]["cpu"] == run["cpu"]
        for policy, run in before["repeats"][0].items():
            assert rebuilt["repeats"][0][policy]["summary"]["served"] == run["summary"]["served"]
