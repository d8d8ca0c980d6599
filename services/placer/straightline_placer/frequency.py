"""f_t: requests per second per model over a sliding window.

Each model keeps the arrival times inside the window in a deque; recording an arrival appends
and drops what has slid out, so the cost per request is constant on average and memory is
bounded by the arrivals in one window. The arrival being recorded counts: f_t at time t
includes the request arriving at t.
"""

import threading
import time
from collections import deque
from collections.abc import Callable


class FrequencyWindow:
    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if window_seconds <= 0:
            raise ValueError("the frequency window must be positive")
        self._window = window_seconds
        self._clock = clock
        self._arrivals: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @property
    def window_seconds(self) -> float:
        return self._window

    def resize(self, window_seconds: float) -> None:
        """Changes the window; arrivals already recorded are kept and judged by the new length."""
        if window_seconds <= 0:
            raise ValueError("the frequency window must be positive")
        with self._lock:
            self._window = window_seconds

    def record(self, key: str) -> float:
        """Records one arrival for `key` now and returns its frequency, in requests per second."""
        now = self._clock()
        with self._lock:
            arrivals = self._arrivals.get(key)
            if arrivals is None:
                arrivals = self._arrivals[key] = deque()
            arrivals.append(now)
            return self._count_since(arrivals, now - self._window) / self._window

    def rate(self, key: str) -> float:
        """The frequency of `key` now, without recording an arrival."""
        now = self._clock()
        with self._lock:
            arrivals = self._arrivals.get(key)
            if not arrivals:
                return 0.0
            return self._count_since(arrivals, now - self._window) / self._window

    @staticmethod
    def _count_since(arrivals: deque[float], start: float) -> int:
        while arrivals and arrivals[0] <= start:
            arrivals.popleft()
        return len(arrivals)
