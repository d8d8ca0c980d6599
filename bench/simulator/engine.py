"""Virtual time: a queue of events, each a callable run at its time, in order."""

import heapq
import itertools
from collections.abc import Callable


class Engine:
    def __init__(self):
        self.now = 0.0
        self._events: list[tuple[float, int, Callable, tuple]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    def at(self, when: float, action: Callable, *args) -> None:
        heapq.heappush(self._events, (when, next(self._order), action, args))

    def after(self, delay: float, action: Callable, *args) -> None:
        self.at(self.now + delay, action, *args)

    def run(self, until: float = float("inf")) -> None:
        while self._events and self._events[0][0] <= until:
            self.now, _, action, args = heapq.heappop(self._events)
            action(*args)
