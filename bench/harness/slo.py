"""What users of a latency objective count: the share of requests answered within it (a
failure is a miss), what the answers cost, and how far the placer's predictions were from
what the requests then took."""

import dataclasses
import statistics
from dataclasses import dataclass

from bench.harness.generator import Record
from straightline_placer import prediction
from straightline_placer.policy import DEFAULT_PLATFORM_SETTINGS, PlatformSettings

PLATFORM_SETTINGS = {platform.name.lower(): s for platform, s in DEFAULT_PLATFORM_SETTINGS.items()}


@dataclass(frozen=True)
class Costing:
    """Each platform's prices and slots per instance: a request costs what the placer's cost
    model says for the time the platform was busy with it (`prediction.cost`: execution and
    cold start, not time in a queue, which holds no slot), so policies are compared on the
    prices the SLO-aware rule decides by."""

    slots: dict[str, int]
    settings: dict[str, PlatformSettings] = dataclasses.field(
        default_factory=lambda: dict(PLATFORM_SETTINGS)
    )

    def of(self, record: Record) -> float:
        """An answered request's cost; a failed one costs nothing (Lambda bills no throttle)."""
        if not record.ok or record.platform not in self.slots:
            return 0.0
        return prediction.cost(
            record.platform_ms / 1e3, self.slots[record.platform], self.settings[record.platform]
        )

    def as_json(self) -> dict:
        return {
            "slots": self.slots,
            "settings": {p: dataclasses.asdict(s) for p, s in self.settings.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> "Costing":
        settings = {p: PlatformSettings(**s) for p, s in data["settings"].items()}
        return cls(dict(data["slots"]), settings)


def attainment(records: list[Record], objective_ms: float) -> float | None:
    """The share of requests answered within the objective; failures count as misses."""
    if not records:
        return None
    met = sum(1 for r in records if r.ok and r.response_ms <= objective_ms)
    return round(met / len(records), 4)


def cost_per_1000(records: list[Record], costing: Costing) -> float | None:
    """US dollars per 1,000 requests sent (failures included in the count, at no cost)."""
    if not records:
        return None
    return round(sum(costing.of(r) for r in records) / len(records) * 1000, 9)


def prediction_error(records: list[Record]) -> dict:
    """Per platform, over answered requests that had a prediction: observed (response time)
    minus predicted, median and median of its absolute value, in ms."""
    errors: dict[str, list[float]] = {}
    for r in records:
        if r.ok and r.predicted_ms > 0:
            errors.setdefault(r.platform, []).append(r.response_ms - r.predicted_ms)
    return {
        platform: {
            "n": len(values),
            "median_ms": round(statistics.median(values), 1),
            "median_abs_ms": round(statistics.median(abs(v) for v in values), 1),
        }
        for platform, values in sorted(errors.items())
    }
