"""What the placer remembers of an instance after its adapter forgets its requests: the figures
it last measured, and whether they were too slow for the latency objective, and at what request
rate.

Adapters forget requests after 30 s, so a platform the SLO-aware rule stopped choosing reports
nothing. Without a memory the placer would measure it again every 30 s, at the load that had
just made it too slow, and send it more requests while the first answers came back (the fourth
pass of the evaluation: most of its misses at high load were those). With one:

- figures within the objective are recalled as they were: the rule chooses the platform again
  when it is the cheapest one, and that measures it anew;
- figures too slow for it are recalled for a hold (60 s, doubled each time a new measurement
  finds the platform too slow again, up to 8 min) and while the model's request rate stays
  above 80% of the lowest rate it was found too slow at; after that the platform is measured
  again, one request at a time.
"""

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

BASE_HOLD_S = 60.0
MAX_HOLD_S = 480.0
REMEASURE_BELOW = 0.8  # of the rate at which the platform was found too slow

S = TypeVar("S")


@dataclass(slots=True)
class Recollection(Generic[S]):
    stats: S | None = None  # the last figures the instance measured
    slow_at_rps: float = math.inf
    slow_until: float = 0.0
    hold_s: float = 0.0
    remeasuring: bool = False

    def remember(self, stats: S, too_slow: bool, rate_rps: float, now: float) -> None:
        """Fresh figures from the instance, too slow for the objective or not."""
        self.stats = stats
        if not too_slow:
            self.slow_at_rps, self.hold_s, self.remeasuring = math.inf, 0.0, False
            return
        if self.remeasuring or not self.hold_s:
            self.hold_s = min(MAX_HOLD_S, 2 * self.hold_s) if self.hold_s else BASE_HOLD_S
            self.remeasuring = False
        self.slow_at_rps = min(self.slow_at_rps, rate_rps)
        self.slow_until = now + self.hold_s

    def recalls(self, too_slow: bool, rate_rps: float, now: float) -> bool:
        """Whether the remembered figures stand in for the forgotten ones now; when they stop
        to, the next fresh figures are a re-measurement."""
        if not too_slow:
            return True
        if now < self.slow_until and rate_rps >= REMEASURE_BELOW * self.slow_at_rps:
            return True
        self.remeasuring = True
        return False
