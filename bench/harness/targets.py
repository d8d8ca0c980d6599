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


def _per_bin(runs: dict) -> list[dict[str, dict]]:
    """For every bin: {policy: its row there}."""
    policies = list(runs)
    return [
        dict(zip(policies, rows, strict=True))
        for rows in zip(*(runs[p]["over_time"] for p in policies), strict=True)
    ]


def _target(what: str, bins: list, missed: list[dict]) -> dict:
    return {"what": what, "bins": len(bins), "missed": missed, "met": not missed}


def _attained(row: dict) -> float:
    return row.get("slo_attainment") or 0.0


def _best_single(rows: dict[str, dict]) -> dict:
    """The bin's row of the single platform that attained most there."""
    return max((rows[p] for p in SINGLE_POLICIES if p in rows), key=_attained)


def _missed(row: dict, **figures) -> dict:
    return {"rate_rps": round(row["rate_rps"], 1), **figures}


def check_slo(outcome: dict) -> dict:
    """The SLO-aware rule's targets in the outcome's testbed (empty without its run). Runs
    averaged over rounds (`over_rounds`) are judged against the noise they carry: a shortfall
    counts only beyond the spread of the best single platform's own rounds in that bin."""
    runs = outcome["runs"]
    if SLO_POLICY not in runs or not any(p in runs for p in SINGLE_POLICIES):
        return {}
    bins = _per_bin(runs)
    if outcome.get("testbed") != "remote-serverless":
        return {"not_below": _not_below_best_single(bins)}
    local_limit = outcome["capacity"]["physical"]["limit_rps"]
    return {
        "at_least_best_single": _at_least_best_single(bins),
        "higher_beyond_local": _higher_beyond_local(bins, local_limit),
        "no_failures_until_limit": _no_failures_until_limit(runs),
        "cost_within_margin": _cost_within_margin(bins),
    }


def check_slo_over_rounds(outcome: dict) -> dict:
    """`check_slo` over every round of the run (empty with one round)."""
    if not outcome.get("repeats"):
        return {}
    return check_slo({**outcome, "runs": over_rounds([outcome["runs"], *outcome["repeats"]])})


def over_rounds(rounds: list[dict]) -> dict:
    """Each policy's bins over several rounds of the same request sequence: its SLO
    attainment, failure rate and cost averaged over the rounds, its requests summed (the
    rounds' requests pooled), and the spread of its attainment (largest less smallest): how
    much the policy differs from itself between rounds there."""
    return {
        policy: {
            "over_time": [
                _averaged(rows)
                for rows in zip(*(r[policy]["over_time"] for r in rounds), strict=True)
            ]
        }
        for policy in rounds[0]
        if all(policy in r for r in rounds)
    }


def _averaged(rows: tuple[dict, ...]) -> dict:
    attained = [r["slo_attainment"] for r in rows if r.get("slo_attainment") is not None]
    return {
        "rate_rps": rows[0]["rate_rps"],
        "requests": sum(r["requests"] for r in rows),
        "slo_attainment": _mean(attained),
        "slo_attainment_spread": max(attained) - min(attained) if attained else 0.0,
        "failure_rate": _mean([r["failure_rate"] for r in rows]),
        "cost_per_1000_usd": _mean(
            [r["cost_per_1000_usd"] for r in rows if r.get("cost_per_1000_usd") is not None]
        ),
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


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


def _noise(rows: dict[str, dict]) -> float:
    """How much the best single platform differs from itself between rounds in the bin (0
    for one round)."""
    return _best_single(rows).get("slo_attainment_spread", 0.0)


def _shortfall(rows: dict[str, dict]) -> dict:
    ours, best = rows[SLO_POLICY], _best_single(rows)
    missed = _missed(ours, attainment=_attained(ours), best_single=_attained(best))
    if _noise(rows):
        missed["noise"] = round(_noise(rows), 4)
    if "requests" in ours:  # runs recorded before the harness counted them have no p-value
        p_value = shortfall_p_value(_attained(ours), _attained(best), ours["requests"])
        missed["p_value"] = round(p_value, 3)
    return missed


def _below_best_single(rows: dict[str, dict], allowed: float) -> bool:
    return _attained(rows[SLO_POLICY]) < _attained(_best_single(rows)) - max(allowed, _noise(rows))


def _not_below_best_single(bins: list[dict[str, dict]]) -> dict:
    missed = [_shortfall(rows) for rows in bins if _below_best_single(rows, LOCAL_SHORTFALL)]
    return _target(
        f"SLO attainment never below the best single platform's by more than "
        f"{LOCAL_SHORTFALL:.0%} points",
        bins,
        missed,
    )


def _at_least_best_single(bins: list[dict[str, dict]]) -> dict:
    missed = [_shortfall(rows) for rows in bins if _below_best_single(rows, 0.0)]
    return _target("SLO attainment at least the best single platform's", bins, missed)


def _higher_beyond_local(bins: list[dict[str, dict]], local_limit_rps: float) -> dict:
    """Strict: above, not within noise of it (only 100% counts as above the best)."""
    beyond = [rows for rows in bins if rows[SLO_POLICY]["rate_rps"] > local_limit_rps]
    missed = [
        _shortfall(rows)
        for rows in beyond
        if not (
            _attained(rows[SLO_POLICY]) > _attained(_best_single(rows))
            or _attained(rows[SLO_POLICY]) == 1.0
        )
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


def _cost_within_margin(bins: list[dict[str, dict]]) -> dict:
    """In the bins where the SLO-aware rule meets the objective, its cost per 1,000 requests
    is within 10% of the cheapest policy that meets it there too."""
    checked, missed = [], []
    for rows in bins:
        ours = rows[SLO_POLICY]
        if _attained(ours) < MEETS_OBJECTIVE:
            continue
        checked.append(ours)
        cheapest = min(
            r["cost_per_1000_usd"] for r in rows.values() if _attained(r) >= MEETS_OBJECTIVE
        )
        if ours["cost_per_1000_usd"] > COST_MARGIN * cheapest:
            missed.append(_missed(ours, cost=ours["cost_per_1000_usd"], cheapest=cheapest))
    return _target(
        "cost per 1,000 requests within 10% of the cheapest policy meeting the objective",
        checked,
        missed,
    )
