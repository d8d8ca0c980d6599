"""What the Docker and local serverless backends share: environments from a pool, some of
them containers that this adapter owns (labelled with its name) and removes when it stops,
and at start when a predecessor of the same name left them (killed, it could not)."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from straightline_common.errors import Unavailable
from straightline_common.modelstore import ModelStore
from straightline_inference.adapter import containers
from straightline_inference.adapter.backend import Answer, Capacity, PredictCall, ServesStore
from straightline_inference.adapter.pool import EnvironmentPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSettings:
    """How many environments, how busy each may be, how long an idle one lives."""

    max_environments: int
    slots_per_environment: int
    queue_limit: int
    idle_timeout_s: float
    min_environments: int


class PooledBackend(ServesStore):
    def __init__(
        self,
        *,
        store: str,
        image: str,
        owner: str,
        sharing: containers.Sharing,
        pool: PoolSettings,
        start_timeout_s: float = 120.0,
    ) -> None:
        self._store = ModelStore(store)
        self._image = image
        self._owner = owner
        self._sharing = sharing
        self._pool_settings = pool
        self._start_timeout_s = start_timeout_s
        self._pool: EnvironmentPool[Any] | None = None
        self._engine = None  # a Docker client, when the environments are containers

    def capacity(self) -> Capacity:
        return self._started_pool().capacity()

    def _started_pool(self) -> EnvironmentPool[Any]:
        if self._pool is None:
            raise Unavailable("the backend has not started: its environments are not running")
        return self._pool

    def _open_engine(self) -> None:
        """Connects to the Docker engine, checks the image is there, and removes the
        containers its name's predecessor left behind."""
        self._engine = containers.engine()
        containers.require_image(self._engine, self._image)
        left = containers.remove_owned(self._engine, self._owner)
        if left:
            log.warning(
                "removed the containers a predecessor of this adapter's name left behind",
                extra={"adapter_name": self._owner, "containers": left},
            )

    def _open_pool(
        self,
        start: Callable[[], Any],
        stop: Callable[[Any], None],
        probe: Callable[[Any], str | None],
        name: str,
    ) -> None:
        """Starts the pool of environments, and the warm ones it keeps."""
        settings = self._pool_settings
        self._pool = EnvironmentPool(
            start,
            stop,
            max_environments=settings.max_environments,
            slots_per_environment=settings.slots_per_environment,
            queue_limit=settings.queue_limit,
            idle_timeout_s=settings.idle_timeout_s,
            min_environments=settings.min_environments,
            name=name,
            probe=probe,
        )
        self._pool.fill()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._engine is not None:
            containers.remove_owned(self._engine, self._owner)
            self._engine.close()


class ModelServerPool(PooledBackend):
    """Pools whose environments are model servers reached by their `client` (Docker
    containers, Swarm tasks): a request leases a slot of one and is sent to it."""

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        started = time.monotonic()
        with self._started_pool().lease(timeout) as lease:
            remaining = timeout - (time.monotonic() - started)
            try:
                answer = lease.environment.client.predict(call, remaining)
            except Unavailable:
                lease.discard()  # the model server died or hangs: replace it
                raise
        return Answer(
            answer.model,
            answer.classes,
            queue_seconds=lease.queued_seconds,
            cold_start_seconds=lease.cold_start_seconds,
            execution_seconds=answer.execution_seconds,
        )
