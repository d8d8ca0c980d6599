"""Keeps a platform's own server alive: probes it on an interval (and at once when a request
finds it unreachable), reports the cause while it cannot serve, and restarts it with backoff.

The probe is the platform's (a readiness check). After `failures_to_report` failed probes in
a row the server is reported down (no capacity) until a probe succeeds (one slow probe of a
starved machine is not an outage); after `failures_to_restart`, or at once when its process
has exited, it is restarted: its process killed and reaped (no
zombie), a new one started; failures to start back off from 1 s to 30 s."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 1.0
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Problem:
    cause: str
    certain: bool = False  # the process is gone: no need to see it fail again


class Supervisor:
    """`probe()` returns None when the server is well, else its Problem; `restart()` replaces
    the server (raising when it cannot); both run on the supervisor's thread."""

    def __init__(
        self,
        name: str,
        probe: Callable[[], Problem | None],
        restart: Callable[[], None],
        *,
        failures_to_restart: int,
        failures_to_report: int = 2,
        interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self._name = name
        self._probe = probe
        self._restart = restart
        self._interval_s = interval_s
        self._failures_to_restart = failures_to_restart
        self._failures_to_report = failures_to_report
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"supervise-{name}", daemon=True)
        self.down_reason = ""  # set while the server cannot serve
        self.restarts = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def suspect(self) -> None:
        """A request found the server unreachable: probe now rather than at the next tick."""
        self._wake.set()

    def _run(self) -> None:
        failed = 0
        while not self._stopping.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            problem = self._probe()
            if problem is None:
                failed, self.down_reason = 0, ""
                continue
            failed += 1
            if problem.certain or failed >= self._failures_to_report:
                self.down_reason = f"the {self._name} cannot serve: {problem.cause}"
            if problem.certain or failed >= self._failures_to_restart:
                self._recover(problem.cause)
                failed = 0

    def _recover(self, cause: str) -> None:
        self.down_reason = f"the {self._name} cannot serve: {cause}; restarting it"
        log.error("platform down: restarting it", extra={"server": self._name, "cause": cause})
        started, backoff = time.monotonic(), MIN_BACKOFF_S
        while not self._stopping.is_set():
            try:
                self._restart()
            except Exception as error:  # any failure to start is retried
                log.error(
                    "platform restart failed: retrying",
                    extra={"server": self._name, "cause": str(error), "retry_in_s": backoff},
                )
                self._stopping.wait(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            self.restarts += 1
            self.down_reason = ""
            log.info(
                "platform restarted",
                extra={"server": self._name, "seconds": round(time.monotonic() - started, 2)},
            )
            return
