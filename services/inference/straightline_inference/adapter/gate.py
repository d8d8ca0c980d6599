"""A fixed number of slots with a bounded queue in front of them (`queue_bound.py`)."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from straightline_common.errors import DeadlineExceeded, ResourceExhausted
from straightline_inference.adapter.backend import Capacity
from straightline_inference.adapter.queue_bound import QueueBound


class SlotGate:
    def __init__(
        self, capacity: int, queue_limit: int | QueueBound = 0, name: str = "the platform"
    ) -> None:
        """`queue_limit`: the queue's places, or a bound that sizes them."""
        self.capacity = capacity
        self._queue = QueueBound.of(queue_limit)
        self._name = name
        self._in_flight = 0
        self._waiting = 0
        self._changed = threading.Condition()

    @property
    def queue_limit(self) -> int:
        return self._queue.limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def free(self) -> int:
        return max(0, self.capacity - self._in_flight)

    def capacity_report(self, warm: bool) -> Capacity:
        """The gate's slots as a platform's capacity: one environment holding them all, warm
        or not."""
        with self._changed:
            in_flight, waiting = self._in_flight, self._waiting
        return Capacity(
            total=self.capacity,
            free=max(0, self.capacity - in_flight),
            in_flight=in_flight,
            queue_depth=waiting,
            queue_limit=self.queue_limit,
            warm_environments=1 if warm else 0,
            warm_slots=self.capacity if warm else 0,
        )

    @contextmanager
    def slot(self, timeout: float) -> Iterator[float]:
        """Holds one slot for the block; yields the seconds spent waiting for it. Raises
        ResourceExhausted when every slot and queue place is taken, DeadlineExceeded when
        no slot frees up within `timeout`."""
        queued = self._acquire(timeout)
        held_from = time.perf_counter()
        try:
            yield queued
        finally:
            with self._changed:
                self._in_flight -= 1
                self._queue.held(time.perf_counter() - held_from, self.capacity)
                self._changed.notify()

    def _acquire(self, timeout: float) -> float:
        started = time.perf_counter()
        with self._changed:
            if self._in_flight < self.capacity and self._waiting == 0:
                self._in_flight += 1
                return 0.0
            if self._waiting >= self._queue.limit:
                raise ResourceExhausted(
                    f"{self._name} is at capacity ({self.capacity} at once) and its queue "
                    f"({self._queue.limit}) is full"
                )
            self._waiting += 1
            try:
                if not self._changed.wait_for(lambda: self._in_flight < self.capacity, timeout):
                    raise DeadlineExceeded(
                        f"no slot of {self._name} freed up within {timeout:.3f} s"
                    )
            finally:
                self._waiting -= 1
            self._in_flight += 1
            return time.perf_counter() - started
