"""How far an instance's answers land from the SLO-aware rule's predictions, and the margin that
turns a point prediction into a probability of meeting the objective.

A prediction that is right on average is still late for some requests when the platform's own
latency spreads around the objective (the evaluation's seventh pass: Docker answered 200-380 ms
at the same load). So the placer keeps, per instance, the errors of its recent predictions
(observed minus predicted, seconds) and the rule asks for more than a point prediction within
the objective: the predicted latency plus the errors' quantile at the attainment target
(`Policy.slo_attainment_target`, e.g. 0.99). A request sent there meets the objective with at
least that probability, as far as the recent errors tell. With fewer than `MIN_ERRORS` the
margin is the worst error seen or the prior the caller gives (the platform's recent spread of
service times), whichever is larger, never below zero: cautious until the errors say otherwise.

Errors are kept for `MAX_AGE_S` (twice as long as adapters keep their requests' figures): a
platform the rule stopped choosing for its errors is judged again on its figures once they
have aged out, rather than kept out for ever (with `shed_late_requests` nothing would measure
it again). Only real predictions count: a platform not measured yet is predicted at no service
time, and its first answer's error says nothing about the next.
"""

import math
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW = 64
MIN_ERRORS = 8
MAX_AGE_S = 60.0


class PredictionErrors:
    """The last `WINDOW` prediction errors of one instance, of the last `MAX_AGE_S`; safe to
    share between threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._errors: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (when, error)
        self._sorted: list[float] | None = []
        self._lock = threading.Lock()

    def add(self, error_s: float) -> None:
        with self._lock:
            self._errors.append((self._clock(), error_s))
            self._sorted = None

    def margin_s(self, attainment: float, prior_s: float = 0.0) -> float:
        """What to add to a prediction so that at least `attainment` of the recent answers
        would have been within it; `prior_s` until there are `MIN_ERRORS` of them."""
        errors = self._ordered()
        if len(errors) < MIN_ERRORS:
            return max(0.0, prior_s, errors[-1] if errors else 0.0)
        return errors[min(len(errors), math.ceil(attainment * len(errors))) - 1]

    def _ordered(self) -> list[float]:
        with self._lock:
            horizon = self._clock() - MAX_AGE_S
            while self._errors and self._errors[0][0] < horizon:
                self._errors.popleft()
                self._sorted = None
            if self._sorted is None:
                self._sorted = sorted(error for _when, error in self._errors)
            return self._sorted
