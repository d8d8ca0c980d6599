"""How many requests may wait for a platform's slots: a fixed number (`--queue-limit N`), or by
default what the slots drain within the latency objective (`--queue-limit auto`,
`--latency-objective-ms`), at the pace they have been held lately.

A request that joins a queue of `slots` busy slots at place q (from 0) starts after about
(q + 1) / slots holds and ends one hold later, so it is answered within the objective O while
(q + 1) / slots x hold + hold <= O: the queue has slots x (O / hold - 1) places. A model server
that batches holds each of its slots for a batch's run, so its pace is its slots per run, which
is what it drains. The queue never has fewer than `MIN_LIMIT` places: a model slower than its
objective (Xception held a second a request by a batching model server) would otherwise get
none, and a client's eight callers would be refused where every peer queues them; the placer's
SLO-aware rule reads the queue's depth and sends a request that would wait past its objective
elsewhere. Until enough holds are known the queue has `MIN_LIMIT` places too.
"""

import math
import statistics
from collections import deque

MIN_LIMIT = 8  # as many as the callers a client usually opens: none of them refused
MAX_LIMIT = 1024
RECENT_HOLDS = 64
RESIZE_EVERY = 8  # holds between two sizings: the median of 64 is not worth taking per request


class QueueBound:
    """The places of the queue in front of some slots. Not thread-safe: its gate (or pool)
    calls it under its own lock."""

    def __init__(self, limit: int, objective_s: float | None = None) -> None:
        self.limit = limit
        self._objective_s = objective_s
        self._holds: deque[float] = deque(maxlen=RECENT_HOLDS)
        self._since_sizing = 0

    @classmethod
    def of(cls, limit: "int | QueueBound") -> "QueueBound":
        """A bound as given, or a fixed one of `limit` places."""
        return limit if isinstance(limit, QueueBound) else cls(limit)

    @classmethod
    def draining_within(cls, objective_s: float) -> "QueueBound":
        """A queue sized to what its slots drain within `objective_s`."""
        return cls(MIN_LIMIT, objective_s)

    @property
    def sized(self) -> bool:
        """Whether the queue follows its slots' pace (else it is fixed)."""
        return self._objective_s is not None

    def held(self, seconds: float, slots: int) -> None:
        """One of `slots` slots was held for `seconds`; a sized queue follows the median of
        the recent holds."""
        if self._objective_s is None:
            return
        self._holds.append(seconds)
        self._since_sizing += 1
        if self._since_sizing >= RESIZE_EVERY:
            self._since_sizing = 0
            self.limit = drain_limit(slots, statistics.median(self._holds), self._objective_s)


def drain_limit(slots: int, hold_s: float, objective_s: float) -> int:
    """The places of a queue whose last request `slots` slots, each held `hold_s` a request,
    still answer within `objective_s` (between MIN_LIMIT and MAX_LIMIT)."""
    if hold_s <= 0:
        return MAX_LIMIT
    places = math.floor(slots * (objective_s / hold_s - 1) + 1e-9)  # 0.3 / 0.05 is 5.999...
    return max(MIN_LIMIT, min(MAX_LIMIT, places))
