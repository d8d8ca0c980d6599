"""What the Docker and local serverless platforms share: environments from a pool, some of
them containers that this adapter instance owns and removes when it stops."""

from straightline_inference.adapter import containers
from straightline_inference.adapter.platform import Capacity, ServesStore
from straightline_inference.adapter.pool import EnvironmentPool


class PooledPlatform(ServesStore):
    _owner: str
    _pool: EnvironmentPool | None = None
    _engine = None  # a Docker client, when the environments are containers

    def capacity(self) -> Capacity:
        return self._pool.capacity()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._engine is not None:
            containers.remove_owned(self._engine, self._owner)
            self._engine.close()
