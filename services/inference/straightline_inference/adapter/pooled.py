"""What the Docker and local serverless platforms share: environments from a pool, some of
them containers that this adapter owns (labelled with its name) and removes when it stops,
and at start when a predecessor of the same name left them (killed, it could not)."""

import logging

from straightline_inference.adapter import containers
from straightline_inference.adapter.platform import Capacity, ServesStore
from straightline_inference.adapter.pool import EnvironmentPool

log = logging.getLogger(__name__)


class PooledPlatform(ServesStore):
    _owner: str
    _pool: EnvironmentPool | None = None
    _engine = None  # a Docker client, when the environments are containers

    def capacity(self) -> Capacity:
        return self._pool.capacity()

    def _open_engine(self) -> None:
        """Connects to the Docker engine and removes the containers its name's predecessor
        left behind."""
        self._engine = containers.engine()
        left = containers.remove_owned(self._engine, self._owner)
        if left:
            log.warning(
                "removed the containers a predecessor of this adapter's name left behind",
                extra={"adapter_name": self._owner, "containers": left},
            )

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._engine is not None:
            containers.remove_owned(self._engine, self._owner)
            self._engine.close()
