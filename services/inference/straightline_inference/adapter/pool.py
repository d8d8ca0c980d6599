"""Execution environments started on demand, reused while warm, reaped when idle.

Docker model-server containers and local Lambda environments are both pools: an environment
has a fixed number of slots (a container's worker threads; one for a Lambda environment,
which runs one invocation at a time), the pool starts up to `max_environments` of them, and
beyond that requests wait in a bounded queue (zero for Lambda: it throttles instead).
`min_environments` are started by `fill()` and never reaped (Lambda's provisioned
concurrency, a deployment's minimum replicas): they spare the first requests a cold start.
With a `probe`, every idle environment is checked each second: a dead one is removed (and
its remains stopped), logged with the cause, and the minimum started again.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from straightline_common.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from straightline_inference.adapter.backend import Capacity
from straightline_inference.adapter.queue_bound import QueueBound

log = logging.getLogger(__name__)
E = TypeVar("E")


@dataclass(eq=False)
class _Slotted(Generic[E]):
    environment: E
    busy: int = 0
    last_used: float = field(default_factory=time.monotonic)
    broken: bool = False


def _placeholder(busy: int = 0) -> "_Slotted[Any]":
    """The slot of an environment still starting (its environment set once started)."""
    return _Slotted(None, busy=busy)


@dataclass(frozen=True)
class Lease(Generic[E]):
    environment: E
    queued_seconds: float
    cold_start_seconds: float  # zero when the environment was warm
    _slotted: _Slotted[E]

    def discard(self) -> None:
        """The environment is unusable: it is stopped and removed when the lease ends."""
        self._slotted.broken = True


class EnvironmentPool(Generic[E]):
    def __init__(
        self,
        start: Callable[[], E],
        stop: Callable[[E], None],
        *,
        max_environments: int,
        slots_per_environment: int = 1,
        queue_limit: int | QueueBound = 0,
        idle_timeout_s: float = 60.0,
        min_environments: int = 0,
        name: str = "the pool",
        probe: Callable[[E], str | None] | None = None,
    ) -> None:
        if not 0 <= min_environments <= max_environments:
            raise ValueError("min_environments must be between 0 and max_environments")
        self._start, self._stop = start, stop
        self.max_environments = max_environments
        self.min_environments = min_environments
        self.slots = slots_per_environment
        self._queue = QueueBound.of(queue_limit)
        self.idle_timeout_s = idle_timeout_s
        self._name = name
        self._probe = probe
        self._ready: list[_Slotted[E]] = []
        self._starting: list[_Slotted[E]] = []  # placeholders of environments being started
        self._waiting = 0
        self._closed = False
        self._changed = threading.Condition()
        self._reaper = threading.Thread(target=self._reap_forever, name="reaper", daemon=True)
        self._reaper.start()

    @contextmanager
    def lease(self, timeout: float) -> Iterator[Lease[E]]:
        """Holds a slot of an environment for the block, starting one if needed."""
        started = time.perf_counter()
        slotted, must_start = self._acquire(timeout)
        queued = time.perf_counter() - started
        cold = self._start_environment(slotted) if must_start else 0.0
        held_from = time.perf_counter()
        try:
            yield Lease(slotted.environment, queued, cold, slotted)
        finally:
            self._release(slotted, time.perf_counter() - held_from)

    def fill(self) -> None:
        """Starts environments up to the minimum kept warm; raises if one fails.

        One after the other, in the calling thread: an environment that is a local process
        dies with the thread that started it (PR_SET_PDEATHSIG), so not from a short-lived one.
        """
        while True:
            with self._changed:
                if len(self._ready) + len(self._starting) >= self.min_environments:
                    return
                placeholder = _placeholder()
                self._starting.append(placeholder)
            self._start_environment(placeholder)

    def capacity(self) -> Capacity:
        """Free slots count those of running environments and those it may still start."""
        with self._changed:
            busy = sum(s.busy for s in self._ready)
            room = self.max_environments - len(self._ready) - len(self._starting)
            return Capacity(
                total=self.max_environments * self.slots,
                free=len(self._ready) * self.slots - busy + max(0, room) * self.slots,
                in_flight=busy,
                queue_depth=self._waiting,
                queue_limit=self._queue.limit,
                warm_environments=len(self._ready),
                warm_slots=len(self._ready) * self.slots,
            )

    def environments(self) -> list[E]:
        with self._changed:
            return [s.environment for s in self._ready]

    def close(self) -> None:
        """Stops every environment; waits for those still starting."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            self._changed.wait_for(lambda: not self._starting, timeout=120)
            doomed, self._ready = self._ready, []
        for slotted in doomed:
            self._stop_quietly(slotted.environment)

    # Internals -------------------------------------------------------------------------------

    def _acquire(self, timeout: float) -> tuple[_Slotted[E], bool]:
        """A slot on a ready environment, or (a placeholder, True) when the caller must start
        a new environment."""
        deadline = time.monotonic() + timeout
        with self._changed:
            queued = False
            try:
                while True:
                    if self._closed:
                        raise Unavailable(f"{self._name} is shutting down")
                    slotted = self._least_busy()
                    if slotted is not None:
                        slotted.busy += 1
                        return slotted, False
                    if len(self._ready) + len(self._starting) < self.max_environments:
                        placeholder = _placeholder(busy=1)
                        self._starting.append(placeholder)
                        return placeholder, True
                    if not queued:
                        if self._waiting >= self._queue.limit + self._spare_slots_starting():
                            raise ResourceExhausted(
                                f"{self._name} is at its limit ({self.max_environments} "
                                f"environments, {self.slots} slot(s) each) and its queue "
                                f"({self._queue.limit}) is full"
                            )
                        self._waiting += 1
                        queued = True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeadlineExceeded(f"no slot of {self._name} freed up in time")
                    self._changed.wait(remaining)
            finally:
                if queued:
                    self._waiting -= 1

    def _start_environment(self, slotted: _Slotted[E]) -> float:
        """Starts the environment of a placeholder that holds one slot; returns the time it took."""
        started = time.perf_counter()
        try:
            slotted.environment = self._start()
        except BaseException:
            with self._changed:
                self._starting.remove(slotted)
                self._changed.notify_all()
            raise
        cold = time.perf_counter() - started
        with self._changed:
            self._starting.remove(slotted)
            self._ready.append(slotted)
            self._changed.notify_all()
        log.info("environment started", extra={"pool": self._name, "cold_start_s": round(cold, 3)})
        return cold

    def _spare_slots_starting(self) -> int:
        """Slots of environments still starting that nobody holds yet: requests waiting for
        them are not queued beyond capacity, they wait for the start."""
        return sum(self.slots - s.busy for s in self._starting)

    def _least_busy(self) -> _Slotted[E] | None:
        candidates = [s for s in self._ready if s.busy < self.slots and not s.broken]
        return min(candidates, key=lambda s: s.busy) if candidates else None

    def _release(self, slotted: _Slotted[E], held_s: float) -> None:
        with self._changed:
            slotted.busy -= 1
            slotted.last_used = time.monotonic()
            self._queue.held(held_s, self.max_environments * self.slots)
            doomed = slotted.broken and slotted.busy == 0 and slotted in self._ready
            if doomed:
                self._ready.remove(slotted)
            self._changed.notify_all()
        if doomed:
            self._stop_quietly(slotted.environment)

    def _reap_forever(self) -> None:
        while True:
            with self._changed:
                self._changed.wait(timeout=min(1.0, self.idle_timeout_s / 4))
                if self._closed:
                    return
                now = time.monotonic()
                idle = [
                    s
                    for s in self._ready
                    if s.busy == 0 and now - s.last_used > self.idle_timeout_s
                ]
                del idle[max(0, len(self._ready) - self.min_environments) :]
                for slotted in idle:
                    self._ready.remove(slotted)
                unused = [s for s in self._ready if s.busy == 0] if self._probe else []
            for slotted in idle:
                log.info("environment idle, stopping it", extra={"pool": self._name})
                self._stop_quietly(slotted.environment)
            if self._remove_dead(unused):
                self._refill()

    def _remove_dead(self, unused: list[_Slotted[E]]) -> int:
        """Probes environments nobody uses; removes and stops the dead ones; how many."""
        removed, probe = 0, self._probe
        if probe is None:
            return 0
        for slotted in unused:
            cause = probe(slotted.environment)
            if cause is None:
                continue
            with self._changed:
                if slotted.busy or slotted not in self._ready:
                    continue  # leased meanwhile: the request will find out
                self._ready.remove(slotted)
                self._changed.notify_all()
            log.error("environment dead: removed", extra={"pool": self._name, "cause": cause})
            self._stop_quietly(slotted.environment)
            removed += 1
        return removed

    def _refill(self) -> None:
        """Starts the minimum again (from this long-lived thread: see `fill`)."""
        try:
            self.fill()
        except Exception as error:  # the next sweep tries again
            log.error("could not start an environment back: %s", error, extra={"pool": self._name})

    def _stop_quietly(self, environment: E) -> None:
        try:
            self._stop(environment)
        except Exception:
            log.exception("could not stop an environment of %s", self._name)
