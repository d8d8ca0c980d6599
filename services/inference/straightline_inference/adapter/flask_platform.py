"""Flask: the REST model server as a local process with a fixed number of worker threads
(its capacity), started by the adapter, or one already running at a given URL."""

import logging
import sys
import tempfile
from pathlib import Path

from straightline.v1 import types_pb2
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.modelserver_client import ModelServerClient
from straightline_inference.adapter.platform import Answer, Capacity, PredictCall, ServesStore

log = logging.getLogger(__name__)


class FlaskPlatform(ServesStore):
    kind = types_pb2.PLATFORM_FLASK

    def __init__(
        self,
        *,
        store: str,
        threads: int,
        url: str = "",
        queue_limit: int = 0,
        start_timeout_s: float = 120.0,
    ):
        self._store = ModelStore(store)
        self._threads = threads
        self._url = url
        self._start_timeout_s = start_timeout_s
        self._gate = SlotGate(threads, queue_limit, name="the Flask model server")
        self._process: ServiceProcess | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None
        self._client: ModelServerClient | None = None

    def start(self) -> None:
        url = self._url or self._start_model_server()
        self._client = ModelServerClient(url, connections=self._threads)
        self._client.wait_ready(self._start_timeout_s)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._process is not None:
            self._process.terminate()
        if self._workdir is not None:
            self._workdir.cleanup()

    def capacity(self) -> Capacity:
        return self._gate.capacity_report(warm=self._client is not None)

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        with self._gate.slot(timeout) as queued:
            answer = self._client.predict(call, timeout)
        return Answer(
            answer.model,
            answer.classes,
            queue_seconds=queued,
            execution_seconds=answer.execution_seconds,
        )

    def _start_model_server(self) -> str:
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
            ],
            Path(self._workdir.name),
        )
        self._process.wait_ready(self._start_timeout_s)
        log.info(
            "Flask model server started",
            extra={"port": self._process.ports["http"], "python": sys.executable},
        )
        return f"http://127.0.0.1:{self._process.ports['http']}"
