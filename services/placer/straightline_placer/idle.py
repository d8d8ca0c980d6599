"""Heartbeat streams that stopped sending: closed once they have been quiet for longer than
the heartbeat timeout, so that a stream held open without heartbeats keeps neither a stream
slot nor its instance's claim (issue 15: held streams must not lock anyone out)."""

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class IdleStreams:
    """Open streams and when each last received a message. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_message: dict[Cancellable, float] = {}
        self._lock = threading.Lock()

    def touch(self, stream: Cancellable) -> None:
        """The stream opened or received a message."""
        with self._lock:
            self._last_message[stream] = self._clock()

    def forget(self, stream: Cancellable) -> None:
        with self._lock:
            self._last_message.pop(stream, None)

    def close_idle(self, timeout_s: float) -> int:
        """Cancels every stream quiet for longer than `timeout_s`; returns how many."""
        since = self._clock() - timeout_s
        with self._lock:
            idle = [stream for stream, last in self._last_message.items() if last < since]
            for stream in idle:
                del self._last_message[stream]
        for stream in idle:
            stream.cancel()
        if idle:
            log.warning(
                "closed heartbeat streams that sent nothing for longer than the heartbeat timeout",
                extra={"streams": len(idle), "timeout_s": timeout_s},
            )
        return len(idle)
