"""Requests that go out together: calls that arrive within a delay of the first of a group, up
to a number of calls and a number of bytes, are sent in one (opt-in: serverless batching, one
Lambda invocation then carries several requests; Docker coalescing, one model-server call
carries several images).

The first call of a group leads it: it waits until the group is full or `max_delay_s` has
passed since it came, closes the group (the next call starts another), sends it, and hands
each call its own answer or error. The others wait for their answer. Under light load a group
holds one call and waits the whole delay, unless `wait_for_more` says there is no point (the
Docker platform has a free slot: the call goes at once).
"""

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from straightline_common.errors import InvalidArgument
from straightline_inference.adapter.backend import Capacity

C = TypeVar("C")  # a call
A = TypeVar("A")  # its answer
MAX_BATCH_SIZE = 64  # the Lambda handler's limit too
MAX_BATCH_DELAY_S = 1.0


@dataclass(eq=False)
class _Group(Generic[C, A]):
    calls: list[C] = field(default_factory=list)
    weight: int = 0
    closed: bool = False
    results: Sequence[A | BaseException] = ()
    done: threading.Event = field(default_factory=threading.Event)


class Coalescer(Generic[C, A]):
    """`send(calls)` sends a group and returns one answer, or the exception to raise, per call
    in order; an exception it raises fails every call of the group. `weight(call)` (bytes, say)
    counts against `max_weight` per group."""

    def __init__(
        self,
        send: Callable[[list[C]], Sequence[A | BaseException]],
        max_size: int,
        max_delay_s: float,
        weight: Callable[[C], int] = lambda _call: 0,
        max_weight: int = 0,
        wait_for_more: Callable[[], bool] = lambda: True,
    ) -> None:
        self._send = send
        self._max_size, self._max_delay_s = max_size, max_delay_s
        self._weight, self._max_weight = weight, max_weight
        self._wait_for_more = wait_for_more
        self._forming: _Group[C, A] | None = None
        self._changed = threading.Condition()
        self._following = 0

    @property
    def following(self) -> int:
        """Calls waiting for the call that leads their group to send it."""
        return self._following

    def call(self, call: C) -> A:
        """Sends `call` in a group and returns its answer (or raises its error)."""
        group, index, leads = self._join(call)
        if leads:
            self._lead(group)
        else:
            group.done.wait()
            with self._changed:
                self._following -= 1
        result = group.results[index]
        if isinstance(result, BaseException):
            raise result
        return result

    def _join(self, call: C) -> tuple[_Group[C, A], int, bool]:
        weight = self._weight(call)
        with self._changed:
            group = self._forming
            if group is not None and self._max_weight and group.weight + weight > self._max_weight:
                self._close(group)
                group = None
            leads = group is None
            if group is None:
                group = self._forming = _Group()
            group.calls.append(call)
            group.weight += weight
            self._following += 0 if leads else 1
            if len(group.calls) >= self._max_size:
                self._close(group)
            return group, len(group.calls) - 1, leads

    def _close(self, group: _Group[C, A]) -> None:
        """With the lock held: no call joins `group` any more."""
        group.closed = True
        if self._forming is group:
            self._forming = None
        self._changed.notify_all()

    def _lead(self, group: _Group[C, A]) -> None:
        deadline = time.monotonic() + (self._max_delay_s if self._wait_for_more() else 0.0)
        with self._changed:
            while not group.closed and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            self._close(group)
        try:
            group.results = self._send(group.calls)
            if len(group.results) != len(group.calls):
                raise RuntimeError(
                    f"a group of {len(group.calls)} calls got {len(group.results)} answers"
                )
        except BaseException as error:
            group.results = [error] * len(group.calls)
        finally:
            group.done.set()


@dataclass(frozen=True)
class Batching:
    """Up to `size` requests that arrive within `delay_s` of the first go out in one call; a
    size of 1 (the default) sends each request on its own."""

    size: int = 1
    delay_s: float = 0.005

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_BATCH_SIZE:
            raise InvalidArgument(f"the batch size must be between 1 and {MAX_BATCH_SIZE}")
        if not 0 <= self.delay_s <= MAX_BATCH_DELAY_S:
            raise InvalidArgument(
                f"the batch delay must be between 0 and {MAX_BATCH_DELAY_S * 1e3:.0f} ms"
            )

    @property
    def on(self) -> bool:
        return self.size > 1

    def coalescer(
        self,
        send: Callable[[list[C]], Sequence[A | BaseException]],
        weight: Callable[[C], int],
        max_weight: int,
        wait_for_more: Callable[[], bool] = lambda: True,
    ) -> Coalescer[C, A] | None:
        """What groups the calls, when batching is on."""
        if not self.on:
            return None
        return Coalescer(send, self.size, self.delay_s, weight, max_weight, wait_for_more)

    def slots(self, capacity: Capacity) -> Capacity:
        """An environment's slots as the placer should count them: a batch each."""
        if not self.on:
            return capacity
        return dataclasses.replace(
            capacity,
            total=capacity.total * self.size,
            free=capacity.free * self.size,
            warm_slots=capacity.warm_slots * self.size,
        )


NO_BATCHING = Batching()
