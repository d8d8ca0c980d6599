"""Streams an adapter instance's reports to the placer, reconnecting with backoff.

The placer's acknowledgement says how often to report. Stopping sends a last report marked
`leaving`, so the placer drops the instance at once; a crash leaves it to the placer's
heartbeat timeout.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.auth import Role, Tokens, load_tokens
from straightline_common.channels import open_channel
from straightline_common.timeconv import seconds
from straightline_common.tls import TlsFiles, tls_from_environ

log = logging.getLogger(__name__)


# The placer refused this adapter's reports: retrying unchanged fails the same way.
_REFUSED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)


class HeartbeatSender:
    def __init__(
        self,
        placer_address: str,
        make_report: Callable[[], types_pb2.InstanceReport],
        interval_s: float = 1.0,
        max_backoff_s: float = 0.5,  # a restarted placer sees the instance within a second
        tokens: Tokens | None = None,
        tls: TlsFiles | None = None,
        on_batching: Callable[[types_pb2.BatchingLimits], None] | None = None,
    ) -> None:
        """`on_batching` takes the placer's batching ceilings from each acknowledgement."""
        self._placer_address = placer_address
        self._on_batching = on_batching
        self._tls = tls or tls_from_environ()
        self._tokens = tokens or (None if self._tls else load_tokens())
        self._make_report = make_report
        self.interval_s = interval_s
        self._max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._abandoned = False
        self._sequence = 0
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self.connected = threading.Event()
        self._call = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Says goodbye and ends the stream: the placer drops the instance at once."""
        self._stop.set()
        self._thread.join(timeout)

    def abandon(self) -> None:
        """Drops the stream without a clean end, as a crash would."""
        self._abandoned = True
        call = self._call
        if call is not None:
            call.cancel()
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            with open_channel(
                self._placer_address, Role.ADAPTER, tokens=self._tokens, tls=self._tls
            ) as channel:
                stub = placer_pb2_grpc.PlacerServiceStub(channel)
                try:
                    self._call = call = stub.Heartbeat(self._reports())
                    for ack in call:
                        self.interval_s = seconds(ack.interval) or 1.0
                        if self._on_batching is not None:
                            self._on_batching(ack.batching)
                        self.connected.set()
                        backoff = 0.1
                except grpc.RpcError as error:
                    self.connected.clear()
                    if error.code() in _REFUSED:
                        log.error("placer refused heartbeats: %s", error.details())
                    elif not self._stop.is_set():
                        log.warning(
                            "heartbeat stream to %s broke (%s); reconnecting in %.1f s",
                            self._placer_address,
                            error.code().name,
                            backoff,
                        )
                finally:
                    self._call = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    def _reports(self) -> Iterator[placer_pb2.HeartbeatRequest]:
        while not self._stop.is_set():
            yield placer_pb2.HeartbeatRequest(report=self._next_report())
            self._stop.wait(self.interval_s)
        if not self._abandoned:
            yield placer_pb2.HeartbeatRequest(report=self._next_report(), leaving=True)

    def _next_report(self) -> types_pb2.InstanceReport:
        self._sequence += 1
        report = self._make_report()
        report.sequence = self._sequence
        return report


class Heartbeats:
    """One HeartbeatSender per placer of `placers` ("host:port" or several, comma-separated):
    every placer of an active-active set sees the instance."""

    def __init__(
        self, placers: str, make_report: Callable[[], types_pb2.InstanceReport], **options: Any
    ) -> None:
        self.senders = [
            HeartbeatSender(address.strip(), make_report, **options)
            for address in placers.split(",")
        ]

    def start(self) -> None:
        for sender in self.senders:
            sender.start()

    def stop(self) -> None:
        for sender in self.senders:
            sender.stop()

    def abandon(self) -> None:
        for sender in self.senders:
            sender.abandon()

    def wait_connected(self, timeout: float) -> bool:
        """Whether every placer acknowledged a report within `timeout`."""
        deadline = time.monotonic() + timeout
        return all(
            sender.connected.wait(max(0.0, deadline - time.monotonic())) for sender in self.senders
        )
