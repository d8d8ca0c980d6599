"""Flask: the REST model server as local processes with a fixed number of worker threads in
all (its capacity; one process by default, or several, each with a share of the threads, for
a model server's Python that one core cannot keep up with), started by the adapter, or one
already running at a given URL. Each is probed; one the adapter started is restarted when it
dies or hangs, while the others serve."""

import dataclasses
import itertools
import threading

from straightline.v1 import types_pb2
from straightline_common.errors import Unavailable
from straightline_common.modelstore import ModelStore
from straightline_common.tls import TlsFiles
from straightline_inference.adapter.backend import Answer, Capacity, PredictCall, ServesStore
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.model_server_process import ModelServerProcess
from straightline_inference.adapter.queue_bound import QueueBound


class FlaskBackend(ServesStore):
    kind = types_pb2.PLATFORM_FLASK

    def __init__(
        self,
        *,
        store: str,
        threads: int,
        processes: int = 1,
        url: str = "",
        queue_limit: int | QueueBound = 0,
        start_timeout_s: float = 120.0,
        tls: TlsFiles | None = None,
    ) -> None:
        self._store = ModelStore(store)
        self._gate = SlotGate(threads, queue_limit, name="the Flask model server")
        self._servers = [
            ModelServerProcess(
                store=self._store,
                threads=share,
                url=url,
                start_timeout_s=start_timeout_s,
                tls=tls,
                name="Flask model server" + (f" {number} of {processes}" if processes > 1 else ""),
            )
            for number, share in enumerate(_shares(threads, processes), start=1)
        ]
        self._choosing = threading.Lock()
        self._turn = itertools.count()

    def start(self) -> None:
        for server in self._servers:
            server.launch()
        for server in self._servers:
            server.start()

    def stop(self) -> None:
        for server in self._servers:
            server.stop()

    def capacity(self) -> Capacity:
        capacity = dataclasses.replace(
            self._gate.capacity_report(warm=all(s.started for s in self._servers)),
            runs_per_environment=self.model_server_runs() * len(self._servers),
        )
        live = [server for server in self._servers if not server.down_reason]
        if not live:
            return dataclasses.replace(
                capacity, free=0, queue_limit=0, unavailable_reason=self._down_reason()
            )
        live_threads = sum(server.threads for server in live)
        return dataclasses.replace(
            capacity, free=min(capacity.free, max(0, live_threads - capacity.in_flight))
        )

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        if all(server.down_reason for server in self._servers):
            raise Unavailable(self._down_reason())
        with self._gate.slot(timeout) as queued:
            server = self._take_server()
            try:
                answer = server.predict(call, timeout)
            finally:
                with self._choosing:
                    server.in_flight -= 1
        return dataclasses.replace(answer, queue_seconds=queued + answer.queue_seconds)

    def _take_server(self) -> ModelServerProcess:
        """The serving process with the most of its threads free, taking turns among equals
        so that requests one at a time spread too."""
        with self._choosing:
            count = len(self._servers)
            turn = next(self._turn) % count
            candidates = [
                (server.in_flight / server.threads, (number - turn) % count, server)
                for number, server in enumerate(self._servers)
                if not server.down_reason
            ]
            if not candidates:
                raise Unavailable(self._down_reason())
            _, _, server = min(candidates, key=lambda candidate: candidate[:2])
            server.in_flight += 1
            return server

    def _down_reason(self) -> str:
        return next((s.down_reason for s in self._servers if s.down_reason), "")


def _shares(threads: int, processes: int) -> list[int]:
    """`threads` split over `processes` as evenly as they go."""
    return [threads // processes + (n < threads % processes) for n in range(processes)]
