"""Issue 6's three targets, checked for each placing policy against the single platforms of
the same run:

1. its failure rate stays at 0 up to the load where the best single platform starts failing;
2. at every load level (bin of the run) its p95 response time is no worse than the best single
   platform's, read two ways: over answered requests only, and with failures counted as misses
   (a platform that refuses a request at once is not faster for it);
3. its sustained throughput (best 30 s of answers) is at least 80% of the machine's physical
   limit for the model (cores / per-image inference time).
"""

import math

from bench.harness import results
from bench.harness.figures import PLACING_POLICIES

SINGLE_POLICIES = ("flask", "docker", "serverless")
THROUGHPUT_SHARE = 0.8


def _infinite(value: float | None) -> float:
    """None (never fails; a p95 that is a failure) as infinity, so that it compares."""
    return math.inf if value is None else value


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _onset(run: dict) -> float:
    return _infinite(results.failure_onset(run["over_time"]))


def failure_onset(runs: dict, policy: str) -> dict:
    """Target 1: the offered rate each starts failing at (None: never)."""
    singles = {p: _onset(runs[p]) for p in SINGLE_POLICIES if p in runs}
    best = max(singles, key=singles.get)
    onset = _onset(runs[policy])
    return {
        "fails_from": _finite(onset),
        "best_single": best,
        "best_single_fails_from": _finite(singles[best]),
        "met": onset >= singles[best],
    }


def _bins_above_best_single(runs: dict, policy: str, p95_of) -> list[dict]:
    singles = [runs[p]["over_time"] for p in SINGLE_POLICIES if p in runs]
    above = []
    for row, *single_rows in zip(runs[policy]["over_time"], *singles, strict=True):
        best = min(_infinite(p95_of(r)) for r in single_rows)
        if _infinite(p95_of(row)) > best:
            above.append(
                {"rate_rps": row["rate_rps"], "p95_ms": p95_of(row), "best_ms": _finite(best)}
            )
    return above


def p95_per_bin(runs: dict, policy: str) -> dict:
    """Target 2: the bins where the policy's p95 is above the best single platform's."""
    answered = _bins_above_best_single(runs, policy, lambda row: row["response_ms"]["p95"])
    counting = _bins_above_best_single(runs, policy, lambda row: row["p95_counting_failures_ms"])
    return {
        "bins": len(runs[policy]["over_time"]),
        "above_answered": answered,
        "above_counting_failures": counting,
        "met": not answered and not counting,
    }


def sustained_share(run: dict, capacity: dict) -> dict:
    """Target 3: best 30 s of answers against the physical limit."""
    share = run["summary"]["sustained_rps"] / capacity["physical"]["limit_rps"]
    return {"share": round(share, 3), "met": share >= THROUGHPUT_SHARE}


def check(outcome: dict) -> dict:
    """policy -> the three targets, for each placing policy of a model's outcome."""
    runs = outcome["runs"]
    if not any(p in runs for p in SINGLE_POLICIES):
        return {}
    return {
        policy: {
            "failure_onset": failure_onset(runs, policy),
            "p95_per_bin": p95_per_bin(runs, policy),
            "throughput": sustained_share(runs[policy], outcome["capacity"]),
        }
        for policy in PLACING_POLICIES
        if policy in runs
    }
