"""Flask: the REST model server as a local process with a fixed number of worker threads
(its capacity), started by the adapter, or one already running at a given URL. Either way it
is probed; one the adapter started is restarted when it dies or hangs."""

import dataclasses
import logging
import sys
import tempfile
from pathlib import Path

from straightline.v1 import types_pb2
from straightline_common.errors import DeadlineExceeded, Unavailable
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from straightline_common.tls import TlsFiles, tls_flags
from straightline_inference.adapter.backend import Answer, Capacity, PredictCall, ServesStore
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.modelserver_client import ModelServerClient
from straightline_inference.adapter.queue_bound import QueueBound
from straightline_inference.adapter.supervisor import PROBE_INTERVAL_S, Problem, Supervisor

log = logging.getLogger(__name__)

# How long one wait for a model server this adapter did not start lasts before it retries.
EXTERNAL_WAIT_S = 5.0
# The health listener of a model server started here answers at once unless the server hangs:
# it is probed twice a second and given half a second, so two misses find a hang in about 2 s.
HEALTH_PROBE_INTERVAL_S = 0.5
HEALTH_PROBE_TIMEOUT_S = 0.5


class FlaskBackend(ServesStore):
    kind = types_pb2.PLATFORM_FLASK

    def __init__(
        self,
        *,
        store: str,
        threads: int,
        url: str = "",
        queue_limit: int | QueueBound = 0,
        start_timeout_s: float = 120.0,
        tls: TlsFiles | None = None,
    ) -> None:
        self._store = ModelStore(store)
        self._tls = tls  # the adapter's own: the model server it starts serves HTTPS with it
        self._threads = threads
        self._url = url
        self._start_timeout_s = start_timeout_s
        self._gate = SlotGate(threads, queue_limit, name="the Flask model server")
        self._process: ServiceProcess | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._client: ModelServerClient | None = None
        self._health: ModelServerClient | None = None  # its health listener, if started here
        self._supervisor = Supervisor(
            "Flask model server",
            self._probe,
            self._restart,
            # Its own health listener answers at once even under load: two missed probes
            # report it down, four are a hang. A server elsewhere is probed behind its
            # workers' queue, late under load: three of 2 s, each a second apart, are both.
            failures_to_report=2 if not url else 3,
            failures_to_restart=4 if not url else 3,
            interval_s=HEALTH_PROBE_INTERVAL_S if not url else PROBE_INTERVAL_S,
        )

    def start(self) -> None:
        url = self._url or self._start_model_server()
        self._client = self._ready_client(url, self._start_timeout_s)
        self._supervisor.start()

    def stop(self) -> None:
        self._supervisor.stop()
        for client in (self._client, self._health):
            if client is not None:
                client.close()
        if self._process is not None:
            self._process.terminate()
        if self._workdir is not None:
            self._workdir.cleanup()

    def capacity(self) -> Capacity:
        capacity = dataclasses.replace(
            self._gate.capacity_report(warm=self._client is not None),
            runs_per_environment=self.model_server_runs(),
        )
        if self._supervisor.down_reason:
            return dataclasses.replace(
                capacity, free=0, queue_limit=0, unavailable_reason=self._supervisor.down_reason
            )
        return capacity

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        if self._supervisor.down_reason:
            raise Unavailable(self._supervisor.down_reason)
        with self._gate.slot(timeout) as queued:
            try:
                answer = self._started_client().predict(call, timeout)
            except (Unavailable, DeadlineExceeded):
                self._supervisor.suspect()
                raise
        return Answer(
            answer.model,
            answer.classes,
            queue_seconds=queued + answer.queue_seconds,
            execution_seconds=answer.execution_seconds,
        )

    def _probe(self) -> Problem | None:
        if self._process is not None and self._process.process.poll() is not None:
            return Problem(f"its process exited ({self._process.process.returncode})", True)
        try:
            if self._health is not None:
                self._health.probe(HEALTH_PROBE_TIMEOUT_S)
            else:
                self._started_client().probe()
        except (Unavailable, DeadlineExceeded) as error:
            return Problem(str(error))
        return None

    def _restart(self) -> None:
        """Replaces the model server this adapter started (killed and reaped first); one
        that runs elsewhere (--flask-url) is waited for instead."""
        if self._process is None:
            new = self._ready_client(self._url, EXTERNAL_WAIT_S)
        else:
            self._process.terminate(timeout=2)  # SIGKILL after 2 s: a stopped one too
            new = self._ready_client(self._start_model_server(), self._start_timeout_s)
        old, self._client = self._client, new
        if old is not None:
            old.close()

    def _started_client(self) -> ModelServerClient:
        if self._client is None:
            raise Unavailable("the Flask model server has not started yet")
        return self._client

    def _ready_client(self, url: str, timeout: float) -> ModelServerClient:
        client = ModelServerClient(url, connections=self._threads, tls=self._tls)
        client.wait_ready(timeout)
        return client

    def _start_model_server(self) -> str:
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="straightline-flask-")
        self._process = ServiceProcess(
            "straightline_inference.modelserver",
            [
                "--store",
                str(self._store.root),
                "--listen",
                "127.0.0.1:0",
                "--threads",
                str(self._threads),
                "--health-listen",
                "127.0.0.1:0",
                *tls_flags(self._tls),
            ],
            Path(self._workdir.name),
        )
        self._process.wait_ready(self._start_timeout_s)
        ports = self._process.ports
        if self._health is not None:
            self._health.close()
        self._health = ModelServerClient(f"http://127.0.0.1:{ports['health']}", connections=1)
        log.info("Flask model server started", extra={"ports": ports, "python": sys.executable})
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://127.0.0.1:{ports['http']}"
