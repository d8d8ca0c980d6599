"""Arrival schedules like Artillery's phases, as send times in seconds from the start.

A phase is `constant:SECONDS:RATE`, `ramp:SECONDS:FROM-TO` (the rate changes linearly) or
`burst:SECONDS:RATE` (a constant phase, named apart in the figures); a scenario is phases
joined by commas, run one after the other. Times are deterministic: the n-th request of a
phase leaves when the phase's cumulative rate reaches n (what Artillery's arrivalRate does).
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    kind: str
    seconds: float
    rate_from: float
    rate_to: float

    def count(self) -> int:
        return int(self.seconds * (self.rate_from + self.rate_to) / 2)

    def offset(self, n: int) -> float:
        """When the n-th request (0-based) of the phase leaves, from the phase's start."""
        slope = (self.rate_to - self.rate_from) / self.seconds
        if abs(slope) < 1e-12:
            return n / self.rate_from
        # Solve rate_from * t + slope * t^2 / 2 = n for t.
        return (-self.rate_from + math.sqrt(self.rate_from**2 + 2 * slope * n)) / slope


def parse(text: str) -> list[Phase]:
    phases = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            kind, seconds, rates = part.split(":")
            low, _, high = rates.partition("-")
            phase = Phase(kind, float(seconds), float(low), float(high or low))
        except ValueError:
            raise ValueError(f"phase {part!r} is not KIND:SECONDS:RATE[-RATE]") from None
        if kind not in ("constant", "ramp", "burst"):
            raise ValueError(f"phase {part!r}: kind must be constant, ramp or burst")
        if phase.seconds <= 0 or phase.rate_from <= 0 or phase.rate_to <= 0:
            raise ValueError(f"phase {part!r}: seconds and rates must be positive")
        phases.append(phase)
    if not phases:
        raise ValueError("the scenario has no phase")
    return phases


def arrivals(phases: list[Phase]) -> list[tuple[float, int]]:
    """(send time, phase index) of every request of the scenario, in order."""
    times, start = [], 0.0
    for index, phase in enumerate(phases):
        times += [(start + phase.offset(n), index) for n in range(phase.count())]
        start += phase.seconds
    return times


def scaled_ramp(sustained_rps: float, ramp_to: float, seconds: float = 180.0) -> str:
    """The paper's scenario shape scaled to a machine: a linear ramp over `seconds` up to
    `ramp_to` times the rate the stack sustains, from a fiftieth of that top rate."""
    if sustained_rps <= 0 or ramp_to <= 0:
        raise ValueError("the sustained rate and the ramp multiple must be positive")
    top = round(ramp_to * sustained_rps, 1)
    return f"ramp:{seconds:g}:{max(1.0, round(top / 50, 1)):g}-{max(top, 2.0):g}"
