"""What the Docker and local serverless backends share: environments from a pool, some of
them containers that this adapter owns (labelled with its name) and removes when it stops,
and at start when a predecessor of the same name left them (killed, it could not)."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from straightline_common.errors import InvalidArgument, Unavailable
from straightline_common.modelstore import ModelStore
from straightline_inference.adapter import containers
from straightline_inference.adapter.backend import Answer, Capacity, PredictCall, ServesStore
from straightline_inference.adapter.coalescer import NO_BATCHING, Batching, Coalescer
from straightline_inference.adapter.oip_backend import classes_of, infer_together, is_pixels
from straightline_inference.adapter.pool import EnvironmentPool, Lease
from straightline_inference.adapter.queue_bound import QueueBound
from straightline_inference.imaging import MAX_IMAGE_BYTES

log = logging.getLogger(__name__)
# A group's images in one model-server request, under its body limit with room for the header.
MAX_GROUP_BYTES = MAX_IMAGE_BYTES - 64 * 1024
MAX_GROUPED_MODELS = 256
Sent = TypeVar("Sent")


@dataclass(frozen=True)
class PoolSettings:
    """How many environments, how busy each may be, how long an idle one lives."""

    max_environments: int
    slots_per_environment: int
    queue_limit: int | QueueBound
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
    containers, Swarm tasks): a request leases a slot of one and is sent to it.

    Coalescing (opt-in, `batching`): requests for the same model that arrive while every slot
    is taken go out in groups, within the delay: a group leases one slot and is one call to the
    model server (an OIP binary infer whose tensor holds the images), which runs its images
    together. A request that finds a free slot goes at once, alone. A request waiting in a
    group counts in the queue the adapter reports. An image the model cannot read fails the
    group's call; each of the group's requests is then sent alone, so that only its own fails.
    """

    def __init__(self, *, batching: Batching = NO_BATCHING, **pooled: Any) -> None:
        super().__init__(**pooled)
        self._batching = batching
        self._groups: dict[tuple[str, str], Coalescer[_Waiting, Answer]] = {}
        self._groups_lock = threading.Lock()

    def capacity(self) -> Capacity:
        capacity = super().capacity()
        following = sum(group.following for group in list(self._groups.values()))
        return replace(
            capacity,
            queue_depth=capacity.queue_depth + following,
            runs_per_environment=self.model_server_runs(),
        )

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        groups = self._groups_for(call)
        if groups is None:
            return self._send_alone(call, timeout)
        return groups.call(_Waiting(call, time.monotonic(), time.monotonic() + timeout))

    def _groups_for(self, call: PredictCall) -> "Coalescer[_Waiting, Answer] | None":
        """The groups the call may join: none without batching, for pixels (one image per
        call), or past MAX_GROUPED_MODELS models (the names come from the network)."""
        if not self._batching.on or is_pixels(call):
            return None
        key = (call.model_name, call.model_version)
        with self._groups_lock:
            groups = self._groups.get(key)
            if groups is None and len(self._groups) < MAX_GROUPED_MODELS:
                groups = self._groups[key] = Coalescer(
                    self._send_group,
                    self._batching.size,
                    self._batching.delay_s,
                    _payload_bytes,
                    MAX_GROUP_BYTES,
                    self._all_slots_taken,
                )
            return groups

    def _all_slots_taken(self) -> bool:
        return self._started_pool().capacity().free == 0

    def _send_alone(self, call: PredictCall, timeout: float, waited: float = 0.0) -> Answer:
        answer, lease = self._on_a_slot(timeout, lambda client, left: client.predict(call, left))
        return Answer(
            answer.model,
            answer.classes,
            queue_seconds=waited + lease.queued_seconds + answer.queue_seconds,
            cold_start_seconds=lease.cold_start_seconds,
            execution_seconds=answer.execution_seconds,
        )

    def _send_group(self, group: list["_Waiting"]) -> list[Answer | BaseException]:
        now = time.monotonic()
        timeout = min(waiting.deadline for waiting in group) - now
        if len(group) == 1:
            return [self._send_alone(group[0].call, timeout, now - group[0].arrived)]
        calls = [waiting.call for waiting in group]
        try:
            started = time.perf_counter()
            (model, entries), lease = self._on_a_slot(
                timeout, lambda client, left: infer_together(client, calls, left)
            )
        except InvalidArgument:
            return [self._alone_or_error(waiting) for waiting in group]
        executed = time.perf_counter() - started - lease.queued_seconds
        return [
            Answer(
                model,
                classes_of(images, waiting.call.top_k),
                queue_seconds=now - waiting.arrived + lease.queued_seconds,
                cold_start_seconds=lease.cold_start_seconds,
                execution_seconds=executed - lease.cold_start_seconds,
            )
            for waiting, images in zip(group, entries, strict=True)
        ]

    def _alone_or_error(self, waiting: "_Waiting") -> Answer | BaseException:
        now = time.monotonic()
        try:
            return self._send_alone(waiting.call, waiting.deadline - now, now - waiting.arrived)
        except Exception as error:  # this call's own answer: handed to it, not raised here
            return error

    def _on_a_slot(
        self, timeout: float, send: Callable[[Any, float], Sent]
    ) -> tuple[Sent, Lease[Any]]:
        """What `send(client, time left)` returns on a leased slot, and the lease; a model
        server that cannot be reached is replaced."""
        started = time.monotonic()
        with self._started_pool().lease(timeout) as lease:
            remaining = timeout - (time.monotonic() - started)
            try:
                return send(lease.environment.client, remaining), lease
            except Unavailable:
                lease.discard()  # the model server died or hangs: replace it
                raise


@dataclass(frozen=True)
class _Waiting:
    call: PredictCall
    arrived: float
    deadline: float


def _payload_bytes(waiting: _Waiting) -> int:
    return len(waiting.call.payload)
