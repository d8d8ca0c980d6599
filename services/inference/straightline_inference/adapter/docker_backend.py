"""Docker: model-server containers started on demand through the Docker SDK (the cold start
is real), kept warm while used, stopped and removed when idle or when the adapter stops."""

import logging
import time
from dataclasses import dataclass
from typing import Any

from docker.errors import DockerException

from straightline.v1 import types_pb2
from straightline_common.errors import DeadlineExceeded, Unavailable
from straightline_common.tls import TlsFiles, tls_flags
from straightline_inference.adapter import containers
from straightline_inference.adapter.modelserver_client import ModelServerClient
from straightline_inference.adapter.pooled_backend import ModelServerPool

log = logging.getLogger(__name__)


@dataclass
class ModelServerContainer:
    container: Any  # a docker Container
    client: ModelServerClient


class DockerBackend(ModelServerPool):
    kind = types_pb2.PLATFORM_DOCKER

    def __init__(self, *, tls: TlsFiles | None = None, **pooled: Any) -> None:
        """`pooled`: PooledBackend's settings; the pool's slots are each container's threads."""
        super().__init__(**pooled)
        self._tls = tls  # the adapter's own: its containers serve HTTPS with it
        self._threads = self._pool_settings.slots_per_environment

    def start(self) -> None:
        self._open_engine()
        self._open_pool(
            self._start_container, self._stop_container, _probe_container, "the Docker platform"
        )

    def _start_container(self) -> ModelServerContainer:
        [port] = containers.free_ports(1)
        try:
            container = containers.run(
                self._engine,
                self._image,
                role="model-server",
                owner=self._owner,
                sharing=self._sharing,
                files=() if self._tls is None else (self._tls.cert, self._tls.key, self._tls.ca),
                command=[
                    "--store",
                    "/models",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--threads",
                    str(self._threads),
                    *tls_flags(self._tls),
                ],
                environment=containers.inherited_environment("straightline-modelserver"),
            )
        except DockerException as error:
            raise Unavailable(f"could not start a model-server container: {error}") from None
        scheme = "http" if self._tls is None else "https"
        client = ModelServerClient(f"{scheme}://127.0.0.1:{port}", self._threads, self._tls)
        try:
            self._wait_ready(container, client)
        except Exception:
            self._stop_container(ModelServerContainer(container, client))
            raise
        return ModelServerContainer(container, client)

    def _wait_ready(self, container: Any, client: ModelServerClient) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            try:
                client.wait_ready(timeout=0.5)
                return
            except (Unavailable, DeadlineExceeded):
                try:
                    container.reload()
                except DockerException:
                    raise Unavailable(
                        f"model-server container {container.short_id} vanished while starting"
                    ) from None
                if container.status == "exited" or time.monotonic() > deadline:
                    raise Unavailable(
                        f"model-server container {container.short_id} did not become ready "
                        f"({container.status}):\n{containers.logs_tail(container)}"
                    ) from None

    def _stop_container(self, environment: ModelServerContainer) -> None:
        environment.client.close()
        try:
            environment.container.remove(force=True)
        except DockerException as error:
            log.warning("could not remove container %s: %s", environment.container.short_id, error)


def _probe_container(environment: ModelServerContainer) -> str | None:
    """Why an idle model-server container cannot serve (gone, exited, not answering), or None."""
    container = environment.container
    problem = containers.problem_of(container, "model-server container")
    if problem is not None:
        return problem
    try:
        environment.client.probe()
    except (Unavailable, DeadlineExceeded) as error:
        return f"model-server container {container.short_id}: {error}"
    return None
