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

Errors are kept per load level: how many other requests ran on the platform's host when the
prediction was made (up to its cores; a platform without a shared host has one level). Two
Xception requests side by side on a 2-core host each take 1.3-1.5 times as long as one alone
(the evaluation's ninth pass), which the host's stretch, counting only requests against
cores, does not see; the errors measured at that level carry it.

A platform with fewer than `MIN_ERRORS` at a level, on a host whose other platforms have
enough there, starts from the largest of their margins (`prediction.py`): the same model on the
same cores is late by the same contention, and a newcomer's few errors, or its spread of
service times, would otherwise make it look surer than the platforms measured beside it (the
evaluation's eleventh pass: serverless, sharing the two cores, was chosen over idle Flask and
Docker on three errors, and answered late).

A platform is *calibrated* at a level once its margin is a real quantile at the target: at
least `errors_for(attainment)` errors there, 1 / (1 - attainment) (100 at 0.99). With fewer,
the quantile is their largest, which a platform exceeds more often than the target allows
(the eleventh pass: with 8 errors, Docker, predicted 202-239 ms, answered 306-350). The SLO-aware
rule prefers calibrated platforms and calibrates the others on copies of requests.

Errors are kept for `MAX_AGE_S` (four times as long as adapters keep their requests' figures,
long enough for 100 errors at one request a second): a platform the rule stopped choosing for
its errors is judged again on its figures once they have aged out, rather than kept out for
ever (with `shed_late_requests` nothing would measure it again). Only real predictions count:
a platform not measured yet is predicted at no service time, and its first answer's error
says nothing about the next.
"""

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

WINDOW = 128
MIN_ERRORS = 8
MAX_AGE_S = 120.0


def errors_for(attainment: float) -> int:
    """How many errors make their `attainment` quantile a real one (not their largest): at
    least MIN_ERRORS, at most WINDOW."""
    # 1 / (1 - 0.99) is 100.00000000000001 in floating point: the epsilon keeps it 100.
    return max(MIN_ERRORS, min(WINDOW, math.ceil(1 / max(1e-9, 1 - attainment) - 1e-9)))


class PredictionErrors:
    """The last `WINDOW` prediction errors of one instance per load level, of the last
    `MAX_AGE_S`; safe to share between threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._levels: defaultdict[int, _Errors] = defaultdict(_Errors)
        self._lock = threading.Lock()

    def add(self, error_s: float, level: int = 0) -> None:
        with self._lock:
            self._levels[level].add(self._clock(), error_s)

    def margin_s(self, attainment: float, prior_s: float = 0.0, level: int = 0) -> float:
        """What to add to a prediction made at `level` so that at least `attainment` of the
        recent answers at that level would have been within it; `prior_s` until there are
        `MIN_ERRORS` of them."""
        with self._lock:
            errors = self._levels.get(level)
            ordered = errors.ordered(self._clock() - MAX_AGE_S) if errors is not None else []
        if len(ordered) < MIN_ERRORS:
            return max(0.0, prior_s, ordered[-1] if ordered else 0.0)
        return ordered[min(len(ordered), math.ceil(attainment * len(ordered))) - 1]

    def known(self, level: int = 0) -> int:
        """How many recent errors at `level` are known."""
        with self._lock:
            errors = self._levels.get(level)
            return len(errors.ordered(self._clock() - MAX_AGE_S)) if errors is not None else 0


class _Errors:
    """One level's errors: the caller holds the lock."""

    def __init__(self) -> None:
        self._errors: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (when, error)
        self._sorted: list[float] | None = []

    def add(self, when: float, error_s: float) -> None:
        self._errors.append((when, error_s))
        self._sorted = None

    def ordered(self, horizon: float) -> list[float]:
        while self._errors and self._errors[0][0] < horizon:
            self._errors.popleft()
            self._sorted = None
        if self._sorted is None:
            self._sorted = sorted(error for _when, error in self._errors)
        return self._sorted
