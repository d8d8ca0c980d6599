"""What a run leaves: its records as CSV, a summary (failure rate, response time and session
length percentiles overall and per platform, throughput, shares per platform, CPU), and the
same over time in bins. Summaries can be rebuilt from the CSV (`read_csv`)."""

import csv
import math
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.harness import slo
from bench.harness.generator import Record

FIELDS = (
    "index",
    "phase",
    "image",
    "bytes",
    "scheduled_s",
    "sent_s",
    "done_s",
    "status",
    "platform",
    "branch",
    "fell_back",
    "cold_start_ms",
    "platform_ms",
    "predicted_ms",
    "response_ms",
    "session_ms",
)


def write_csv(records: list[Record], path: Path) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(FIELDS)
        for r in records:
            writer.writerow([_cell(getattr(r, name)) for name in FIELDS])


def _cell(value):
    return round(value, 3) if isinstance(value, float) else value


def read_csv(path: Path) -> list[Record]:
    """The records `write_csv` wrote (times rounded to the millisecond)."""
    with open(path, newline="") as file:
        return [_record(row) for row in csv.DictReader(file)]


def _record(row: dict) -> Record:
    return Record(
        index=int(row["index"]),
        phase=int(row["phase"]),
        image=row["image"],
        bytes=int(row["bytes"]),
        scheduled_s=float(row["scheduled_s"]),
        sent_s=float(row["sent_s"]),
        done_s=float(row["done_s"]),
        status=row["status"],
        platform=row["platform"],
        branch=row["branch"],
        fell_back=row["fell_back"] == "True",
        cold_start_ms=float(row["cold_start_ms"]),
        platform_ms=float(row.get("platform_ms") or 0),
        predicted_ms=float(row.get("predicted_ms") or 0),
    )


def _at(ordered: list[float], q: float) -> float:
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"median": None, "p95": None, "p99": None}
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p95": _at(ordered, 0.95),
        "p99": _at(ordered, 0.99),
    }


def p95_counting_failures(records: list[Record]) -> float | None:
    """The p95 response time with each failed request counted as slower than any answer
    (a failure is a miss, as a latency objective counts it); None when more than 5% failed,
    so that the p95 is a failure."""
    ordered = sorted(r.response_ms if r.ok else math.inf for r in records)
    value = _at(ordered, 0.95)
    return None if math.isinf(value) else value


def by_platform(records: list[Record]) -> dict:
    """For the answered requests of each platform: how many, response and session percentiles."""
    answered: dict[str, list[Record]] = {}
    for record in records:
        if record.ok:
            answered.setdefault(record.platform, []).append(record)
    return {
        platform: {
            "served": len(group),
            "response_ms": percentiles([r.response_ms for r in group]),
            "session_ms": percentiles([r.session_ms for r in group]),
        }
        for platform, group in sorted(answered.items())
    }


SUSTAINED_WINDOW_S = 30.0


def sustained_throughput(records: list[Record], window_s: float = SUSTAINED_WINDOW_S) -> float:
    """The highest rate of answers over any `window_s` of the run (by the time each answer
    came back): what the stack kept up once the load was there, not diluted by the quiet
    start of a ramp as the whole run's mean is."""
    done = sorted(r.done_s for r in records if r.ok)
    best, first = 0, 0
    for last, finished in enumerate(done):
        while finished - done[first] > window_s:
            first += 1
        best = max(best, last - first + 1)
    return round(best / window_s, 2)


@dataclass(frozen=True)
class Objective:
    """What the SLO figures are read against: the latency objective and the costs."""

    latency_ms: float
    costing: slo.Costing


def summary(
    records: list[Record],
    duration_s: float,
    cpu: list[tuple[float, float]],
    objective: Objective | None = None,
) -> dict:
    ok = [r for r in records if r.ok]
    served = Counter(r.platform for r in ok)
    return {
        "requests": len(records),
        "failures": len(records) - len(ok),
        "failure_rate": round((len(records) - len(ok)) / max(1, len(records)), 4),
        "statuses": dict(Counter(r.status for r in records)),
        "throughput_rps": round(len(ok) / duration_s, 2),
        "sustained_rps": sustained_throughput(records),
        "response_ms": percentiles([r.response_ms for r in ok]),
        "session_ms": percentiles([r.session_ms for r in ok]),
        "served": dict(served),
        "share": {p: round(n / max(1, len(ok)), 3) for p, n in sorted(served.items())},
        "by_platform": by_platform(records),
        "branches": dict(Counter(r.branch for r in ok)),
        "fell_back": sum(r.fell_back for r in ok),
        "cold_starts": sum(r.cold_start_ms > 0 for r in ok),
        "cpu_percent_mean": round(statistics.mean(c for _, c in cpu), 1) if cpu else None,
        **_slo_figures(records, objective),
        "prediction_error": slo.prediction_error(records),
    }


def _slo_figures(records: list[Record], objective: Objective | None) -> dict:
    if objective is None:
        return {}
    return {
        "slo_attainment": slo.attainment(records, objective.latency_ms),
        "cost_per_1000_usd": slo.cost_per_1000(records, objective.costing),
    }


def failure_onset(rows: list[dict], threshold: float = 0.01) -> float | None:
    """The offered rate (requests per second) of the first bin failing more than
    `threshold` of its requests; None if none does."""
    return next((row["rate_rps"] for row in rows if row["failure_rate"] > threshold), None)


def over_time(
    records: list[Record], bin_s: float, objective: Objective | None = None
) -> list[dict]:
    """Per bin of send time: sessions sent so far, failure rate, response and session
    percentiles, where the answered ones ran, and their response percentiles per platform."""
    bins: dict[int, list[Record]] = {}
    for record in records:
        bins.setdefault(int(record.scheduled_s // bin_s), []).append(record)
    rows, sent = [], 0
    for number in sorted(bins):
        group = bins[number]
        sent += len(group)
        ok = [r for r in group if r.ok]
        rows.append(
            {
                "start_s": number * bin_s,
                "sessions_so_far": sent,
                "requests": len(group),
                "rate_rps": len(group) / bin_s,
                "failure_rate": (len(group) - len(ok)) / len(group),
                "response_ms": percentiles([r.response_ms for r in ok]),
                "session_ms": percentiles([r.session_ms for r in ok]),
                "p95_counting_failures_ms": p95_counting_failures(group),
                "served": dict(Counter(r.platform for r in ok)),
                "response_ms_by_platform": {
                    platform: figures["response_ms"]
                    for platform, figures in by_platform(group).items()
                },
                **_slo_figures(group, objective),
                "prediction_error": slo.prediction_error(group),
            }
        )
    return rows
