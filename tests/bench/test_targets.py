"""Issue 6's targets, checked from runs built out of records: which policy fails first, p95
per bin read over answered requests and with failures as misses, throughput against the
physical limit."""

import pytest

from bench.harness import results, targets
from bench.harness.generator import Record


def bin_of(start_s: float, answered_ms: list[float], failed: int = 0) -> list[Record]:
    """One 1 s bin: requests answered after the given times, then `failed` refused ones."""
    sent = [start_s + i / 100 for i in range(len(answered_ms) + failed)]
    answered = [
        Record(0, 0, "a", 10, t, t, t + ms / 1e3, "OK", "flask")
        for t, ms in zip(sent, answered_ms, strict=False)
    ]
    refused = [
        Record(0, 0, "a", 10, t, t, t + 0.001, "RESOURCE_EXHAUSTED")
        for t in sent[len(answered_ms) :]
    ]
    return answered + refused


def run_of(*bins: list[Record], sustained_rps: float = 0.0) -> dict:
    records = [record for group in bins for record in group]
    return {
        "over_time": results.over_time(records, 1.0),
        "summary": {"sustained_rps": sustained_rps},
    }


def test_a_failure_counts_as_slower_than_every_answer():
    assert results.p95_counting_failures(bin_of(0, [10.0] * 20)) == 10.0
    assert results.p95_counting_failures(bin_of(0, [10.0] * 19 + [30.0])) == 30.0
    assert results.p95_counting_failures(bin_of(0, [10.0] * 19, failed=1)) is None
    assert results.p95_counting_failures(bin_of(0, [10.0] * 99, failed=1)) == 10.0


def test_failure_onset_is_met_only_from_the_best_single_platforms_rate_on():
    calm, busy = [5.0] * 10, [5.0] * 20
    runs = {
        "flask": run_of(bin_of(0, calm), bin_of(1, busy[:10], failed=10)),
        "docker": run_of(bin_of(0, calm), bin_of(1, busy)),
        "straightline": run_of(bin_of(0, calm), bin_of(1, busy)),
        "capacity-aware": run_of(bin_of(0, calm[:5], failed=5), bin_of(1, busy)),
    }
    met = targets.failure_onset(runs, "straightline")
    assert met == {
        "fails_from": None,
        "best_single": "docker",
        "best_single_fails_from": None,
        "met": True,
    }
    missed = targets.failure_onset(runs, "capacity-aware")
    assert (missed["fails_from"], missed["met"]) == (10.0, False)


def test_p95_is_compared_per_bin_over_answers_and_with_failures_as_misses():
    # Flask answers fast and refuses the rest of its second bin; the placing rule answers
    # everything, a little slower.
    runs = {
        "flask": run_of(bin_of(0, [5.0] * 20), bin_of(1, [5.0] * 10, failed=10)),
        "straightline": run_of(bin_of(0, [5.0] * 20), bin_of(1, [40.0] * 20)),
    }
    checked = targets.p95_per_bin(runs, "straightline")
    assert checked["bins"] == 2
    assert checked["above_answered"] == [{"rate_rps": 20.0, "p95_ms": 40.0, "best_ms": 5.0}]
    assert checked["above_counting_failures"] == []
    assert not checked["met"]
    runs["straightline"] = run_of(bin_of(0, [9.0] * 20), bin_of(1, [40.0] * 20))
    slower = targets.p95_per_bin(runs, "straightline")["above_counting_failures"]
    assert slower == [{"rate_rps": 20.0, "p95_ms": 9.0, "best_ms": 5.0}]


def test_throughput_is_a_share_of_the_physical_limit():
    capacity = {"physical": {"limit_rps": 20.0}}
    assert targets.sustained_share(run_of(sustained_rps=16.0), capacity) == {
        "share": 0.8,
        "met": True,
    }
    assert not targets.sustained_share(run_of(sustained_rps=15.9), capacity)["met"]


def test_targets_are_checked_for_placing_policies_only_when_a_single_one_ran():
    run = run_of(bin_of(0, [5.0] * 10), sustained_rps=10.0)
    outcome = {"capacity": {"physical": {"limit_rps": 10.0}}, "runs": {"straightline": run}}
    assert targets.check(outcome) == {}
    outcome["runs"]["serverless"] = run
    checked = targets.check(outcome)
    assert set(checked) == {"straightline"}
    assert checked["straightline"]["p95_per_bin"]["met"]
    assert checked["straightline"]["throughput"] == {"share": pytest.approx(1.0), "met": True}
