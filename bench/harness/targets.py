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


# Issue 14's targets for the SLO-aware rule ---------------------------------------------------

SLO_POLICY = "slo-aware"
MEETS_OBJECTIVE = 0.95  # a bin meets a p95 objective when 95% of its requests are within it
COST_MARGIN = 1.10
LOCAL_SHORTFALL = 0.02


def _per_bin(runs: dict, key: str) -> list[tuple[dict, dict[str, float | None]]]:
    """For every bin: (the SLO-aware rule's row, {policy: its figure for `key` there})."""
    policies = list(runs)
    per_bin = []
    for rows in zip(*(runs[p]["over_time"] for p in policies), strict=True):
        by_policy = dict(zip(policies, rows, strict=True))
        per_bin.append((by_policy[SLO_POLICY], {p: r.get(key) for p, r in by_policy.items()}))
    return per_bin


def _target(what: str, bins: list[dict], missed: list[dict]) -> dict:
    return {"what": what, "bins": len(bins), "missed": missed, "met": not missed}


def _best_single(figures: dict[str, float | None]) -> float:
    return max((figures.get(p) or 0.0) for p in SINGLE_POLICIES if p in figures)


def _missed(row: dict, **figures) -> dict:
    return {"rate_rps": round(row["rate_rps"], 1), **figures}


def check_slo(outcome: dict) -> dict:
    """The SLO-aware rule's targets in the outcome's testbed (empty without its run)."""
    runs = outcome["runs"]
    if SLO_POLICY not in runs or not any(p in runs for p in SINGLE_POLICIES):
        return {}
    bins = _per_bin(runs, "slo_attainment")
    if outcome.get("testbed") != "remote-serverless":
        return {"not_below": _not_below_best_single(bins)}
    local_limit = outcome["capacity"]["physical"]["limit_rps"]
    return {
        "at_least_best_single": _at_least_best_single(bins),
        "higher_beyond_local": _higher_beyond_local(bins, local_limit),
        "no_failures_until_limit": _no_failures_until_limit(runs),
        "cost_within_margin": _cost_within_margin(runs),
    }


def shortfall_p_value(attained: float, best: float, requests: int) -> float:
    """How likely the SLO-aware rule would attain `attained` or less of a bin's `requests`
    if it had the same chance of answering each in time as the best single platform, which
    attained `best` of the same requests (one-sided Fisher exact test). Above 0.05 the
    shortfall is within what two runs of one policy differ by."""
    ours, theirs = round(attained * requests), round(best * requests)
    in_time, total = ours + theirs, 2 * requests
    as_low_or_lower = sum(
        math.comb(in_time, k) * math.comb(total - in_time, requests - k)
        for k in range(max(0, in_time - requests), ours + 1)
    )
    return as_low_or_lower / math.comb(total, requests)


def _shortfall(row: dict, figures: dict) -> dict:
    attained, best = figures[SLO_POLICY], _best_single(figures)
    missed = _missed(row, attainment=attained, best_single=best)
    if "requests" in row:  # runs recorded before the harness counted them have no p-value
        missed["p_value"] = round(shortfall_p_value(attained, best, row["requests"]), 3)
    return missed


def _not_below_best_single(bins) -> dict:
    missed = [
        _shortfall(row, figures)
        for row, figures in bins
        if figures[SLO_POLICY] < _best_single(figures) - LOCAL_SHORTFALL
    ]
    return _target(
        f"SLO attainment never below the best single platform's by more than "
        f"{LOCAL_SHORTFALL:.0%} points",
        bins,
        missed,
    )


def _at_least_best_single(bins) -> dict:
    missed = [
        _shortfall(row, figures)
        for row, figures in bins
        if figures[SLO_POLICY] < _best_single(figures)
    ]
    return _target("SLO attainment at least the best single platform's", bins, missed)


def _higher_beyond_local(bins, local_limit_rps: float) -> dict:
    beyond = [(row, f) for row, f in bins if row["rate_rps"] > local_limit_rps]
    missed = [
        _shortfall(row, figures)
        for row, figures in beyond
        if not (figures[SLO_POLICY] > _best_single(figures) or figures[SLO_POLICY] == 1.0)
    ]
    return _target(
        f"SLO attainment above the best single platform's where the load exceeds local "
        f"capacity ({local_limit_rps:g} requests/s; 100% counts as above)",
        beyond,
        missed,
    )


def _no_failures_until_limit(runs: dict) -> dict:
    """No failure in any bin before pinned serverless first fails (its concurrency limit)."""
    limit_bins = runs["serverless"]["over_time"] if "serverless" in runs else []
    onset = next((i for i, b in enumerate(limit_bins) if b["failure_rate"] > 0), len(limit_bins))
    before = runs[SLO_POLICY]["over_time"][:onset]
    missed = [
        _missed(b, failure_rate=round(b["failure_rate"], 4))
        for b in before
        if b["failure_rate"] > 0
    ]
    return _target("no failures until serverless reaches its concurrency limit", before, missed)


def _cost_within_margin(runs: dict) -> dict:
    """In the bins where the SLO-aware rule meets the objective, its cost per 1,000 requests
    is within 10% of the cheapest policy that meets it there too."""
    checked, missed = [], []
    attainments, costs = _per_bin(runs, "slo_attainment"), _per_bin(runs, "cost_per_1000_usd")
    for (row, attained), (_, cost) in zip(attainments, costs, strict=True):
        if (attained[SLO_POLICY] or 0) < MEETS_OBJECTIVE:
            continue
        checked.append(row)
        cheapest = min(cost[p] for p, a in attained.items() if (a or 0) >= MEETS_OBJECTIVE)
        if cost[SLO_POLICY] > COST_MARGIN * cheapest:
            missed.append(_missed(row, cost=cost[SLO_POLICY], cheapest=cheapest))
    return _target(
        "cost per 1,000 requests within 10% of the cheapest policy meeting the objective",
        checked,
        missed,
    )
