"""Adaptive batching, as Triton's dynamic batcher and MLServer's adaptive batching do it: the
images of requests that meet at the model go through it in one call.

A request that finds the model idle, with no other request on its way, runs at once and
alone: batching adds nothing then. Requests that arrive while a batch runs wait for it, and
the next batch takes them all (up to `max_batch_size`). The request that leads a batch waits
at most `max_queue_delay_s` for more to join, and only while others are decoding their images
(announced with `expect()`), so that it never waits for requests that are not coming.
Decoding stays per request, on the requests' own threads, in parallel with the model. A
`max_batch_size` of 1 turns batching off: requests then run through the model side by side.
"""

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from straightline_common.batching_limits import MAX_BATCH_SIZE, MAX_QUEUE_DELAY_S
from straightline_common.errors import InvalidArgument

# The model's forward pass: images (N, height, width, 3) -> scores (N, classes).
Forward = Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]


@dataclass(frozen=True)
class BatchSettings:
    """The defaults were measured on a 2-core machine (bench/batching_bench.py)."""

    max_batch_size: int = 8
    max_queue_delay_s: float = 0.002

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= MAX_BATCH_SIZE:
            raise InvalidArgument(
                f"max_batch_size must be between 1 and {MAX_BATCH_SIZE}, not {self.max_batch_size}"
            )
        if not 0 <= self.max_queue_delay_s <= MAX_QUEUE_DELAY_S:
            raise InvalidArgument(
                f"max_queue_delay must be between 0 and {MAX_QUEUE_DELAY_S * 1e3:.0f} ms"
            )


DEFAULT_BATCHING = BatchSettings()


@dataclass(frozen=True)
class BatchCeiling:
    """Ceilings a request brings for the batch it leads (the placer's policy for its platform,
    passed on by the adapter): 0 / None, none."""

    max_batch_size: int = 0
    max_queue_delay_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size:
            BatchSettings(self.max_batch_size)  # the same bounds, the same sentence
        if self.max_queue_delay_s is not None:
            BatchSettings(max_queue_delay_s=self.max_queue_delay_s)

    def over(self, settings: BatchSettings) -> BatchSettings:
        """`settings`, kept under these ceilings."""
        size = min(settings.max_batch_size, self.max_batch_size or settings.max_batch_size)
        delay = settings.max_queue_delay_s
        if self.max_queue_delay_s is not None:
            delay = min(delay, self.max_queue_delay_s)
        return BatchSettings(size, delay)


def model_batching(metadata: Mapping[str, Any], defaults: BatchSettings) -> BatchSettings:
    """The model's own batching settings (metadata.json's "serving" table: max_batch_size,
    max_queue_delay_ms) over the server's."""
    serving = metadata.get("serving") or {}
    if not isinstance(serving, dict):
        raise InvalidArgument("metadata.json: serving must be a table")
    delay_ms = serving.get("max_queue_delay_ms", defaults.max_queue_delay_s * 1e3)
    return BatchSettings(
        int(serving.get("max_batch_size", defaults.max_batch_size)), float(delay_ms) / 1e3
    )


@dataclass(eq=False)
class _Waiting:
    images: np.ndarray[Any, Any]
    limits: BatchSettings  # of the batch it leads, if it does
    scores: np.ndarray[Any, Any] | None = None
    batch_size: int = 0
    error: BaseException | None = None
    done: bool = False
    joined: float = field(default_factory=time.perf_counter)
    ran: float = 0.0  # when its batch went into the model


@dataclass(frozen=True)
class Batched:
    """One request's scores, and the batch it ran in."""

    scores: np.ndarray[Any, Any]
    batch_size: int
    queue_seconds: float  # from its image's arrival at the batcher to its batch's start


class Batcher:
    """Safe from many threads: each request's thread calls `expect()` before decoding and the
    function it yields with the decoded image."""

    def __init__(self, forward: Forward, settings: BatchSettings = DEFAULT_BATCHING) -> None:
        self._forward = forward
        self.settings = settings
        self._changed = threading.Condition()
        self._queue: list[_Waiting] = []
        self._running = False
        self._expected = 0  # requests decoding, which will join the queue

    @contextmanager
    def expect(
        self, ceiling: BatchCeiling | None = None
    ) -> Iterator[Callable[[np.ndarray[Any, Any]], Batched]]:
        """Announces a request whose image is being decoded; yields the function that runs
        the decoded image (height, width, 3) through the model. `ceiling` bounds the batch the
        request leads, if it does."""
        limits = ceiling.over(self.settings) if ceiling is not None else self.settings
        with self._changed:
            self._expected += 1
        submitted = False

        def submit(image: np.ndarray[Any, Any]) -> Batched:
            nonlocal submitted
            submitted = True
            if limits.max_batch_size == 1:  # batching off: requests run side by side
                with self._changed:
                    self._expected -= 1
                return Batched(self._forward(image[np.newaxis])[0], 1, 0.0)
            return self._run(_Waiting(image[np.newaxis], limits))

        try:
            yield submit
        finally:
            if not submitted:  # its decoding failed: it is not coming
                with self._changed:
                    self._expected -= 1
                    self._changed.notify_all()

    def _run(self, mine: _Waiting) -> Batched:
        with self._changed:
            self._expected -= 1
            self._queue.append(mine)
            self._changed.notify_all()
            while not mine.done and (self._running or self._queue[0] is not mine):
                self._changed.wait()
            if not mine.done:
                batch = self._take_batch()
        if not mine.done:
            self._through_model(batch)
        if mine.error is not None:
            raise mine.error
        assert mine.scores is not None
        return Batched(mine.scores, mine.batch_size, mine.ran - mine.joined)

    def _take_batch(self) -> list[_Waiting]:
        """Called with the lock held by the request at the head of the queue, the model idle:
        waits (bounded) for the requests still decoding, then takes the batch."""
        self._running = True
        leader = self._queue[0].limits
        limit = leader.max_batch_size
        deadline = time.perf_counter() + leader.max_queue_delay_s
        while self._expected > 0 and len(self._queue) < limit:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._changed.wait(left)
        batch, self._queue = self._queue[:limit], self._queue[limit:]
        return batch

    def _through_model(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            images = (
                batch[0].images if len(batch) == 1 else np.concatenate([w.images for w in batch])
            )
            scores = self._forward(images)
            for waiting, row in zip(batch, scores, strict=True):
                waiting.scores = row
        except BaseException as error:  # every request of the batch gets the model's error
            for waiting in batch:
                waiting.error = error
        finally:
            with self._changed:
                for waiting in batch:
                    waiting.done, waiting.batch_size, waiting.ran = True, len(batch), started
                self._running = False
                self._changed.notify_all()
