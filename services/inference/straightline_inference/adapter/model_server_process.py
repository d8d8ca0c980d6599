"""One Flask model server of the Flask platform: a process this adapter starts (loopback port
0, with a health listener of its own) or one already running at a given URL, its client, and
the supervisor that probes it and restarts it when it dies or hangs."""

import logging
import sys
import tempfile
from pathlib import Path

from straightline_common.errors import DeadlineExceeded, Unavailable
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from straightline_common.tls import TlsFiles, tls_flags
from straightline_inference.adapter.backend import Answer, PredictCall
from straightline_inference.adapter.modelserver_client import ModelServerClient
from straightline_inference.adapter.supervisor import PROBE_INTERVAL_S, Problem, Supervisor

log = logging.getLogger(__name__)

# How long one wait for a model server this adapter did not start lasts before it retries.
EXTERNAL_WAIT_S = 5.0
# The health listener of a model server started here answers at once unless the server hangs:
# it is probed twice a second and given half a second, so two misses find a hang in about 2 s.
HEALTH_PROBE_INTERVAL_S = 0.5
HEALTH_PROBE_TIMEOUT_S = 0.5


class ModelServerProcess:
    """`threads`: the model server's worker threads; `url`: one running elsewhere, else this
    adapter starts it. `in_flight` is its requests now, kept by the backend that sends them."""

    def __init__(
        self,
        *,
        store: ModelStore,
        threads: int,
        url: str = "",
        start_timeout_s: float = 120.0,
        tls: TlsFiles | None = None,
        name: str = "Flask model server",
    ) -> None:
        self.threads = threads
        self.in_flight = 0
        self._store = store
        self._tls = tls  # the adapter's own: the model server it starts serves HTTPS with it
        self._url = url
        self._start_timeout_s = start_timeout_s
        self._process: ServiceProcess | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._client: ModelServerClient | None = None
        self._health: ModelServerClient | None = None  # its health listener, if started here
        self._supervisor = Supervisor(
            name,
            self._probe,
            self._restart,
            # Its own health listener answers at once even under load: two missed probes
            # report it down, four are a hang. A server elsewhere is probed behind its
            # workers' queue, late under load: three of 2 s, each a second apart, are both.
            failures_to_report=2 if not url else 3,
            failures_to_restart=4 if not url else 3,
            interval_s=HEALTH_PROBE_INTERVAL_S if not url else PROBE_INTERVAL_S,
        )

    @property
    def down_reason(self) -> str:
        return self._supervisor.down_reason

    @property
    def started(self) -> bool:
        return self._client is not None

    def launch(self) -> None:
        """Starts the process, if this adapter runs it, without waiting for it: processes
        launched one after another load their models side by side."""
        if not self._url:
            self._spawn()

    def start(self) -> None:
        """Waits until the model server serves (launched first, else launched now)."""
        if self._process is None:
            self.launch()
        url = self._url or self._serving_url()
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

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        if self._client is None:
            raise Unavailable("the Flask model server has not started yet")
        try:
            return self._client.predict(call, timeout)
        except (Unavailable, DeadlineExceeded):
            self._supervisor.suspect()
            raise

    def _probe(self) -> Problem | None:
        if self._process is not None and self._process.process.poll() is not None:
            return Problem(f"its process exited ({self._process.process.returncode})", True)
        try:
            if self._health is not None:
                self._health.probe(HEALTH_PROBE_TIMEOUT_S)
            elif self._client is not None:
                self._client.probe()
            else:
                return Problem("it has not started yet")
        except (Unavailable, DeadlineExceeded) as error:
            return Problem(str(error))
        return None

    def _restart(self) -> None:
        """Replaces the model server this adapter started (killed and reaped first); one
        that runs elsewhere is waited for instead."""
        if self._process is None:
            new = self._ready_client(self._url, EXTERNAL_WAIT_S)
        else:
            self._process.terminate(timeout=2)  # SIGKILL after 2 s: a stopped one too
            self._spawn()
            new = self._ready_client(self._serving_url(), self._start_timeout_s)
        old, self._client = self._client, new
        if old is not None:
            old.close()

    def _ready_client(self, url: str, timeout: float) -> ModelServerClient:
        client = ModelServerClient(url, connections=self.threads, tls=self._tls)
        client.wait_ready(timeout)
        return client

    def _spawn(self) -> None:
        # From a thread that lives as long as the adapter (the main one, or the supervisor's):
        # the process dies with the thread that started it.
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="straightline-flask-")
        self._process = ServiceProcess(
            "straightline_inference.modelserver",
            [
                *("--store", str(self._store.root), "--listen", "127.0.0.1:0"),
                *("--threads", str(self.threads), "--health-listen", "127.0.0.1:0"),
                *tls_flags(self._tls),
            ],
            Path(self._workdir.name),
        )

    def _serving_url(self) -> str:
        """Waits for the spawned process's ports; the URL it serves at."""
        assert self._process is not None
        self._process.wait_ready(self._start_timeout_s)
        ports = self._process.ports
        if self._health is not None:
            self._health.close()
        self._health = ModelServerClient(f"http://127.0.0.1:{ports['health']}", connections=1)
        log.info("Flask model server started", extra={"ports": ports, "python": sys.executable})
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://127.0.0.1:{ports['http']}"
