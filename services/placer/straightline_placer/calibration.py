"""How far an instance's answers land from the SLO-aware rule's predictions, and the margin that
turns a point prediction into a probability of meeting the objective.

A prediction that is right on average is still late for some requests when the platform's own
latency spreads around the objective (the evaluation's seventh pass: Docker answered 200-380 ms
at the same load). So the placer keeps, per instance, the errors of its recent predictions
(observed minus predicted, seconds) and the rule asks for more than a point prediction within
the objective: the predicted latency plus the errors' quantile at the attainment target
(`Policy.slo_attainment_target`, e.g. 0.99). A request sent there meets the objective with at
least that probability, as far as the recent errors tell. With fewer than `MIN_ERRORS` the
margin is the worst error seen (never below zero): cautious until the errors say otherwise.
"""

import math
import threading
from collections import deque

WINDOW = 64
MIN_ERRORS = 8


class PredictionErrors:
    """The last `WINDOW` prediction errors of one instance; safe to share between threads."""

    def __init__(self) -> None:
        self._errors: deque[float] = deque(maxlen=WINDOW)
        self._sorted: list[float] | None = []
        self._lock = threading.Lock()

    def add(self, error_s: float) -> None:
        with self._lock:
            self._errors.append(error_s)
            self._sorted = None

    def margin_s(self, attainment: float) -> float:
        """What to add to a prediction so that at least `attainment` of the recent answers
        would have been within it."""
        errors = self._ordered()
        if not errors:
            return 0.0
        if len(errors) < MIN_ERRORS:
            return max(0.0, errors[-1])
        return errors[min(len(errors), math.ceil(attainment * len(errors))) - 1]

    def _ordered(self) -> list[float]:
        with self._lock:
            if self._sorted is None:
                self._sorted = sorted(self._errors)
            return self._sorted
