"""What every backend offers the adapter: the protocol (`Backend`), its calls and answers, and
the capacity it reports. A backend runs the model on one platform (Flask, Docker,
serverless) behind the adapter's gRPC servicer."""

from dataclasses import dataclass
from typing import Any, Protocol

from straightline.v1 import types_pb2
from straightline_common.errors import InvalidArgument
from straightline_common.modelstore import ModelStore
from straightline_inference.batching import DEFAULT_BATCHING, BatchCeiling, model_batching


@dataclass(frozen=True)
class PredictCall:
    request_id: str
    model_name: str
    model_version: str
    payload: bytes
    content_type: str
    top_k: int
    # The placer's batching ceilings for this platform, for the model server (None: none).
    batching: BatchCeiling | None = None


@dataclass(frozen=True)
class Answer:
    """The model's answer (as the model server's JSON has it) and what the platform spent."""

    model: dict[str, str]  # {"name", "version"}
    classes: list[dict[str, Any]]  # [{"label", "index", "score"}]
    queue_seconds: float = 0.0
    cold_start_seconds: float = 0.0
    execution_seconds: float = 0.0


@dataclass(frozen=True)
class Capacity:
    total: int
    free: int
    in_flight: int
    queue_depth: int
    queue_limit: int = 0  # places in the queue; 0: requests beyond `total` are refused
    # Environments running now and the slots they hold: a request on a warm slot pays no
    # cold start (total - warm_slots is what the platform could still start).
    warm_environments: int = 0
    warm_slots: int = 0
    # Set while the platform cannot serve (free and queue_limit are 0 then): the cause.
    unavailable_reason: str = ""
    # Requests an environment runs through the model side by side; 0: as many as its slots.
    runs_per_environment: int = 0


def fill_capacity(report: types_pb2.InstanceReport, capacity: Capacity) -> None:
    """Writes a platform's capacity into an InstanceReport."""
    report.capacity_total = capacity.total
    report.capacity_free = min(capacity.free, capacity.total)
    report.in_flight = capacity.in_flight
    report.queue_depth = capacity.queue_depth
    report.queue_limit = capacity.queue_limit
    report.warm_environments = capacity.warm_environments
    report.warm_slots = capacity.warm_slots
    report.unavailable_reason = capacity.unavailable_reason
    report.runs_per_environment = capacity.runs_per_environment


class Backend(Protocol):
    @property
    def kind(self) -> int:
        """A straightline.v1.Platform value."""

    def start(self) -> None:
        """Gets ready to serve (may take a cold start); raises when it cannot."""

    def stop(self) -> None:
        """Releases everything it started (processes, containers)."""

    def capacity(self) -> Capacity: ...

    def models(self) -> list[tuple[str, str]]:
        """(name, version) of every model it serves."""

    def metadata(self, name: str, version: str) -> dict[str, Any]:
        """The stored metadata of a served model version."""

    def predict(self, call: PredictCall, timeout: float) -> Answer: ...


class ServesStore:
    """For platforms that serve the latest version of every model in a model store."""

    _store: ModelStore

    def models(self) -> list[tuple[str, str]]:
        return [(v.name, v.version) for v in self._store.latest()]

    def metadata(self, name: str, version: str) -> dict[str, Any]:
        return self._store.resolve(name, version).metadata

    def model_server_runs(self) -> int:
        """Requests StraightLine's model server runs side by side in one environment: one
        batch at a time (1) when it batches any of the models, else all its slots (0)."""
        return 1 if any(_batches(v.metadata) for v in self._store.latest()) else 0


def _batches(metadata: dict[str, Any]) -> bool:
    """Whether the model server batches the model (one whose serving settings it rejects,
    it does not serve)."""
    try:
        return model_batching(metadata, DEFAULT_BATCHING).max_batch_size > 1
    except (InvalidArgument, TypeError, ValueError):
        return False
